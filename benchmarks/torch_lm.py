"""The PyTorch baseline: the attention LM of `rc_jax.models.lm` trained the way a researcher would.

The same computation as an `attention` sweep run, written directly in PyTorch for the benchmark:

- model: token embedding + learned positions -> `depth` pre-norm blocks (`x + attn(LN(x))`,
  `x + MLP(LN(x))`) -> LayerNorm -> unembedding. Attention: one bias-free `qkv` projection, `H`
  heads, logits `q.k / sqrt(K) - brake * (i - j)`, causal softmax, bias-free output projection. MLP:
  `Linear(D, 4D) -> gelu (tanh) -> Linear(4D, D)`. LayerNorm eps 1e-6. Same initialisation as Flax:
  embeddings `N(0, 1/D)`, positions `N(0, 0.02^2)`, linear weights truncated normal (2 sd) with
  standard deviation `1/sqrt(fan_in)`, biases 0.
- training: AdamW (b1, b2, eps 1e-8, weight decay from the config) after clipping the global
  gradient norm, cross-entropy on every target; a fresh batch of the rc_jax task sampler every step.
- in-loop collapse measurement every `log_every` steps, as the sweep's `measure`: a probe forward on
  the fixed probe batch returning each layer's routing weights, their content-free prior (the brake
  alone), the residual stream and the attention output before the residual add, then every metric
  of `rc_jax.measurement.metrics.collapse_metrics(routing, hidden, prior=..., routed=...)` per
  layer, plus probe loss and accuracy, brought to the host.

`load_flax_params` copies a Flax parameter tree in, so tests can check the two models agree.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F


class _Block(nn.Module):

  def __init__(self, width: int, n_heads: int, mlp_ratio: int):
    super().__init__()
    self.n_heads = n_heads
    self.norm_mix = nn.LayerNorm(width, eps=1e-6)
    self.qkv = nn.Linear(width, 3 * width, bias=False)
    self.out = nn.Linear(width, width, bias=False)
    self.norm_mlp = nn.LayerNorm(width, eps=1e-6)
    self.up = nn.Linear(width, mlp_ratio * width)
    self.down = nn.Linear(mlp_ratio * width, width)

  def forward(self, x, bias_TxT, with_routing: bool):
    b, t, d = x.shape
    h = self.norm_mix(x)
    q, k, v = (part.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2)
               for part in self.qkv(h).chunk(3, dim=-1))
    if with_routing:  # the weights are needed: write the attention out
      logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + bias_TxT
      weights = torch.softmax(logits, dim=-1)
      mixed = weights @ v
    else:
      mixed = F.scaled_dot_product_attention(q, k, v, attn_mask=bias_TxT)
    routed = self.out(mixed.transpose(1, 2).reshape(b, t, d))
    x = x + routed
    x = x + self.down(F.gelu(self.up(self.norm_mlp(x)), approximate="tanh"))
    if not with_routing:
      return x, None
    prior = torch.softmax(bias_TxT, dim=-1)  # the content-free router: q.k = 0, only the brake
    return x, (weights, prior, k.norm(dim=-1), routed)


class TorchLM(nn.Module):
  """`forward(tokens [B, T], brake, with_routing) -> (logits, layers)`; with routing, `layers` holds
  per layer `(weights [B,H,T,T], prior [T,T], key_norms [B,H,T], hidden [B,T,D], routed [B,T,D])`:
  the attention weights, their content-free prior (softmax of the brake alone), the keys' norms,
  the residual stream after the block and the attention output before the residual add."""

  def __init__(self, *, vocab_size: int, seq_len: int, width: int, depth: int, n_heads: int,
               mlp_ratio: int):
    super().__init__()
    self.tokens = nn.Embedding(vocab_size, width)
    self.positions = nn.Parameter(torch.empty(seq_len, width))
    self.blocks = nn.ModuleList(_Block(width, n_heads, mlp_ratio) for _ in range(depth))
    self.norm_out = nn.LayerNorm(width, eps=1e-6)
    self.unembed = nn.Linear(width, vocab_size, bias=False)
    lag = torch.arange(seq_len)[:, None] - torch.arange(seq_len)[None, :]
    self.register_buffer("lag", lag.float(), persistent=False)
    self._init(width)

  @torch.no_grad()
  def _init(self, width: int):
    nn.init.normal_(self.tokens.weight, std=1.0 / math.sqrt(width))
    nn.init.normal_(self.positions, std=0.02)
    for module in self.modules():
      if isinstance(module, nn.Linear):
        std = 1.0 / math.sqrt(module.in_features) / 0.87962566103423978  # truncation correction
        nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
        if module.bias is not None:
          nn.init.zeros_(module.bias)

  def forward(self, tokens_BxT, brake: float, with_routing: bool = False):
    bias = torch.where(self.lag >= 0, -brake * self.lag, float("-inf"))
    x = self.tokens(tokens_BxT) + self.positions
    layers = []
    for block in self.blocks:
      x, routing = block(x, bias, with_routing)
      if with_routing:
        weights, prior, key_norms, routed = routing
        layers.append((weights, prior, key_norms, x, routed))
    return self.unembed(self.norm_out(x)), layers


@torch.no_grad()
def load_flax_params(model: TorchLM, params) -> None:
  """Copies a Flax `RouterLM` (attention) parameter tree into `model` (Dense kernels transposed)."""
  p = params["params"]
  as_tensor = lambda a: torch.from_numpy(np.array(a, np.float32))
  model.tokens.weight.copy_(as_tensor(p["embed"]["tokens"]["embedding"]))
  model.positions.copy_(as_tensor(p["embed"]["positions"]))
  for i, block in enumerate(model.blocks):
    src = p[f"block_{i}"]
    mixer = next(v for k, v in src.items() if k.startswith("AttentionMixer"))
    mlp = next(v for k, v in src.items() if k.startswith("MLP"))
    for norm in ("norm_mix", "norm_mlp"):
      getattr(block, norm).weight.copy_(as_tensor(src[norm]["scale"]))
      getattr(block, norm).bias.copy_(as_tensor(src[norm]["bias"]))
    block.qkv.weight.copy_(as_tensor(mixer["qkv"]["kernel"]).T)
    block.out.weight.copy_(as_tensor(mixer["out"]["kernel"]).T)
    for name in ("up", "down"):
      getattr(block, name).weight.copy_(as_tensor(mlp[name]["kernel"]).T)
      getattr(block, name).bias.copy_(as_tensor(mlp[name]["bias"]))
  model.norm_out.weight.copy_(as_tensor(p["norm_out"]["scale"]))
  model.norm_out.bias.copy_(as_tensor(p["norm_out"]["bias"]))
  model.unembed.weight.copy_(as_tensor(p["unembed"]["kernel"]).T)


_nanmean = torch.nanmean


def _entropy_rows(w):
  return -torch.where(w > 0, w * torch.log(torch.where(w > 0, w, torch.ones_like(w))),
                      torch.zeros_like(w)).sum(-1)


def _ratio(num, den):
  """`num / den`, NaN where `den <= 0`."""
  return torch.where(den > 0, num / den, torch.full_like(num, math.nan))


def routing_metrics(weights, prior_TxT, key_norms, causal_TxT, *, eps: float,
                    hub_factor: float) -> dict:
  """`rc_jax.measurement.metrics.collapse_metrics`' routing part for causal softmax attention weights
  `A [B, H, T, T]`, their content-free prior `P [T, T]` and key norms `[B, H, T]`.

  Every source is usable, and every row carries mass 1 (softmax), so the mass-weighted metrics
  (`sink_mass_weighted`, the prior ratios, `shared_sources`' votes) are their unweighted forms.
  Each metric is computed per batch x head, then averaged ignoring NaN.
  """
  mask = causal_TxT.expand_as(weights)
  w = torch.where(mask, weights, torch.zeros_like(weights))
  prior = torch.where(causal_TxT, prior_TxT, torch.zeros_like(prior_TxT))
  col_count = mask.sum(-2).float()                                 # [B, H, S]
  alpha = w.sum(-2) / col_count                                    # received mass
  row_count = mask.sum(-1).float()                                 # [B, H, T]
  share = torch.where(mask, 1.0 / row_count[..., None], torch.zeros_like(w))
  uniform = share.sum(-2) / col_count                              # uniform share per source
  top = w.max(-1).values                                           # [B, H, T]
  out = {
      "sink_mass": _nanmean(alpha[..., 0]),
      "sink_mass_weighted": _nanmean(alpha[..., 0]),
      "sink_excess": _nanmean(alpha[..., 0] / uniform[..., 0]),
      # sum_i A_i0 / sum_i P_i0 = alpha_0(A) / alpha_0(P) (every target may use source 0)
      "sink_excess_prior": _nanmean(_ratio(w[..., 0].sum(-1), prior[:, 0].sum())),
      "sink_rate": _nanmean((alpha[..., 0] > eps).float()),
      "top_source_weight": _nanmean(top.mean(-1)),
      "top_source_uniform": _nanmean((1.0 / row_count).mean(-1)),
      "top_source_excess_prior": _nanmean(_ratio(top.sum(-1), prior.max(-1).values.sum())),
  }
  valid = row_count > 1
  entropy = _entropy_rows(w) / torch.log(row_count.clamp(min=2))
  out["routing_entropy"] = _nanmean(torch.where(valid, entropy, torch.zeros_like(entropy)).sum(-1)
                                    / valid.sum(-1))
  out["above_uniform_mass_count"] = _nanmean((alpha > hub_factor * uniform).float().sum(-1))
  out["shared_sources"] = _shared_sources(w, prior, causal_TxT, hub_factor)
  out["hub_excess"] = _hub_excess(w, prior, causal_TxT)
  mean = key_norms.mean(-1, keepdim=True)
  std = ((key_norms - mean) ** 2).mean(-1).sqrt()
  out["key_norm_cv"] = _nanmean(std / mean[..., 0].clamp(min=1e-12))
  sorted_norms = key_norms.sort(-1).values
  n = key_norms.shape[-1]
  median = (sorted_norms[..., (n - 1) // 2] + sorted_norms[..., n // 2]) / 2
  spread = torch.log(key_norms.max(-1).values / median.clamp(min=1e-12))
  out["key_norm_log_spread"] = _nanmean(spread)
  dn = key_norms - mean
  da = alpha - alpha.mean(-1, keepdim=True)
  cov, var_n, var_a = (dn * da).sum(-1), (dn * dn).sum(-1), (da * da).sum(-1)
  cv = (var_n / n).sqrt() / mean[..., 0].abs().clamp(min=1e-12)
  corr = cov / (var_n * var_a).clamp(min=1e-12).sqrt()
  defined = (cv > 1e-4) & (var_a > 1e-12)
  out["norm_mass_correlation"] = _nanmean(torch.where(defined, corr,
                                                      torch.full_like(corr, math.nan)))
  return out


def _shared_sources(w, prior_TxT, causal_TxT, factor: float, min_share: float = 0.5,
                    min_users: float = 0.5):
  """Hubs: sources j usable by at least `max(1, min_users x #choice targets)` targets with a choice
  (two or more sources), more than `min_share` of which give j over `factor` x its prior share
  `P_ij`. Counted per batch x head `[B, H]`, then averaged; NaN when no target has a choice."""
  choice = causal_TxT.sum(-1) >= 2                                 # [T]
  users = causal_TxT & choice[:, None]                             # [T, S]
  n_users = users.sum(-2).float()                                  # [S]
  over = users & (w > factor * prior_TxT)                          # [B, H, T, S]
  over_share = over.sum(-2).float() / n_users                      # NaN (never shared) for 0 users
  enough_users = n_users >= max(1.0, min_users * float(choice.sum()))
  count = (enough_users & (over_share > min_share)).float().sum(-1)
  return _nanmean(count) if choice.any() else torch.tensor(math.nan)


def _hub_excess(w, prior_TxT, causal_TxT):
  """Per head, the largest share of its routing mass (rows with a choice, pooled over the batch)
  one source takes beyond max(prior, uniform share); the max over heads
  (`rc_jax.measurement.metrics.hub_excess`)."""
  row_count = causal_TxT.sum(-1, keepdim=True).float()               # [T, 1]
  choice = (row_count >= 2).float()                                  # [T, 1]
  floor = torch.where(causal_TxT, torch.maximum(prior_TxT, 1.0 / row_count),
                      torch.zeros_like(prior_TxT))
  excess = ((w - floor) * choice).sum(dim=(0, 2))                    # [H, S]
  return (excess.max(-1).values.clamp(min=0) / (w.shape[0] * choice.sum())).max()


def rank_metrics(x_BxTxD) -> dict:
  """Effective rank (of the uncentred tokens) and rank-collapse residual of `x [B, T, D]`."""
  sigma = torch.linalg.svdvals(x_BxTxD)
  p = sigma / sigma.sum(-1, keepdim=True).clamp(min=1e-12)
  centred = x_BxTxD - x_BxTxD.mean(-2, keepdim=True)
  residual = centred.flatten(1).norm(dim=-1) / x_BxTxD.flatten(1).norm(dim=-1).clamp(min=1e-12)
  return {"effective_rank": torch.exp(_entropy_rows(p)).mean(),
          "rank_collapse_residual": residual.mean()}


def massive_activation_ratio(x_BxTxD):
  """`max|x| / median|x|` over each sequence's tokens x features, averaged over the batch."""
  magnitude = x_BxTxD.abs().flatten(1)
  sorted_mag = magnitude.sort(-1).values
  n = magnitude.shape[-1]
  median = (sorted_mag[:, (n - 1) // 2] + sorted_mag[:, n // 2]) / 2
  return (magnitude.max(-1).values / median.clamp(min=1e-12)).mean()


@torch.no_grad()
def measure(model: TorchLM, probe, brake: float, *, eps: float = 0.3,
            hub_factor: float = 2.0) -> dict[str, np.ndarray]:
  """The sweep's in-step measurement: per-layer metrics `[L]`, probe loss and accuracy (host)."""
  inputs, targets = probe
  logits, layers = model(inputs, brake, with_routing=True)
  causal = model.lag >= 0
  per_layer = []
  for weights, prior, key_norms, hidden, routed in layers:
    values = routing_metrics(weights, prior, key_norms, causal, eps=eps, hub_factor=hub_factor)
    values.update(rank_metrics(hidden))
    values["massive_activation_ratio"] = massive_activation_ratio(hidden)
    values.update({f"{name}_routed": value for name, value in rank_metrics(routed).items()})
    per_layer.append(values)
  logs = {name: torch.stack([m[name] for m in per_layer]).numpy() for name in per_layer[0]}
  flat = logits.flatten(0, 1)
  logs["probe_loss"] = F.cross_entropy(flat, targets.flatten()).numpy()
  logs["probe_accuracy"] = (flat.argmax(-1) == targets.flatten()).float().mean().numpy()
  return logs


def train_run(model: TorchLM, batches, probe, *, brake: float, learning_rate: float, b1: float,
              b2: float, weight_decay: float, grad_clip: float, log_every: int,
              with_metrics: bool = True) -> tuple[list[float], list[dict]]:
  """Trains `model` on `batches` (an iterable of `(inputs, targets)` int64 tensors, one per step);
  measures every `log_every` steps (and at step 0). Returns per-step losses and the logs."""
  optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, betas=(b1, b2), eps=1e-8,
                                weight_decay=weight_decay)
  logs = [measure(model, probe, brake)] if with_metrics else []
  losses = []
  for step, (inputs, targets) in enumerate(batches, start=1):
    logits, _ = model(inputs, brake)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    losses.append(loss.detach())
    if with_metrics and step % log_every == 0:
      logs.append(measure(model, probe, brake))
  return [float(v) for v in losses], logs
