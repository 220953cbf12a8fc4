"""RWKV-4 (`model_type` "rwkv", e.g. RWKV/rwkv-4-169m-pile) as a pure forward with routing.

Pre-LN residual stack of time mixing and channel mixing (Hugging Face's `RwkvBlock`), with token
shift `shift(x)_t = x_{t-1}` (0 at t = 0) and `mix(x, m) = m x + (1 - m) shift(x)`:

    h    = pre_ln(embeddings)                                            (layer 0 only)
    a    = ln1(h);  r, k, v = receptance(mix(a, m_r)), key(mix(a, m_k)), value(mix(a, m_v))
    h   += output(sigmoid(r) * wkv(k, v; w = exp(time_decay), u = time_first)) * s_l
    f    = ln2(h);  h += sigmoid(receptance'(mix(f, m'_r))) * value'(relu(key'(mix(f, m'_k)))^2)
                          * s_l
    h    = h / 2    after every `rescale_every`-th layer,    s_l = 2^-(l // rescale_every)
    hidden_states[-1] = ln_out(h_L)                         (eps 1e-5: Hugging Face's default)

The halving and `s_l` are what Hugging Face does in eval mode: it divides the output weights in
place by `2^(l // rescale_every)` and the hidden states by 2 every `rescale_every` layers (in
float32 too; the layer norms undo the scale up to their eps, so it differs from the unscaled
training-mode function only slightly); `rescale_every <= 0` turns both off. Hugging Face ignores
the attention mask: padding tokens are computed like real ones (they only leave the routing mask).

The time mixing is `rc_jax.routers.rwkv_mixer` itself, so a layer's `Routing` has exactly the
semantics of the trained RWKV router (no brake). RWKV-4 has no heads: the
`A = attention_hidden_size` channels are grouped into `num_heads` contiguous heads (default: heads
of `gcd(A, 64)` channels, 64 for every released checkpoint: 12 heads for rwkv-4-169m-pile), and
per head

    weights   [B, H, T, T]  the mean over the head's channels c of the per-channel WKV kernel
                            A_c[t, s] = softmax_{s<=t}(k_s[c] - (t-1-s) w[c]  (s < t),
                                                       u[c] + k_t[c]           (s = t)),
                            restricted to real sources and renormalised (a no-op without padding)
    key_norms [B, H, T]     ||k_s[c in h]||_2
    mask      [B, 1, T, T]  causal, real target and real source;  row_mass None (normalising)

Each head's kernel is built in turn (`[B, A/H, T, T]` at a time, never `[B, A, T, T]`). The
layer's positional prior (`ForwardOutput.priors`) is the same kernel with k = 0 (decay and bonus
kept), the same for every sequence. Regroup heads with `dataclasses.replace(model,
config=dataclasses.replace(model.config, num_heads=H))` (H must divide A).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from rc_jax import routers
from rc_jax.models.mixers import rwkv_init
from rc_jax.pretrained import layers
from rc_jax.pretrained.loading import ArchitectureConfig, TensorSpec, config_value
from rc_jax.pretrained.loading import common_fields, per_layer_specs
from rc_jax.pretrained.mamba import default_num_heads
from rc_jax.routers.routing import Routing, row_normalise

LN_OUT_EPS = 1e-5  # Hugging Face builds ln_out as nn.LayerNorm(hidden_size): torch's default eps


@dataclasses.dataclass(frozen=True)
class Config(ArchitectureConfig):
  """The fields of an RWKV `config.json` the forward needs (hashable: a static jit argument).

  `intermediate_size` is the channel-mixing width; `activation` is "relu" (squared in the forward);
  `max_positions` is `context_length` (the training context; the recurrence itself has no limit);
  `initializer_range` (absent from RWKV configs, default 0.02) only sets the random-init baseline.
  """

  attention_hidden_size: int
  rescale_every: int
  tie_word_embeddings: bool

  @classmethod
  def from_hf(cls, hf: dict[str, Any], where: str) -> "Config":
    hidden = int(config_value(hf, ("hidden_size",), where))
    attention = int(config_value(hf, ("attention_hidden_size",), where, hidden))
    fields = common_fields(hf, where, max_positions=1024, intermediate_size=4 * hidden,
                           layer_norm_eps=1e-5, initializer_range=0.02, activation="relu")
    return cls(
        **dict(fields, activation="relu"),   # RWKV-4's channel mix: squared ReLU, not configurable
        hidden_size=hidden, num_heads=default_num_heads(attention),
        attention_hidden_size=attention,
        rescale_every=int(config_value(hf, ("rescale_every",), where, 6)),
        tie_word_embeddings=bool(config_value(hf, ("tie_word_embeddings",), where, False)),
    )


def _rwkv4_init(name: str):
  """Random-init function for one of RWKV-4's per-channel, depth-dependent parameters
  (`rc_jax.models.mixers.rwkv_init`: decay, bonus, mix_k, mix_v, mix_r), `shape = [L, ..., C]`."""

  def init(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    del key
    n_layers, width = shape[0], shape[-1]
    rows = [rwkv_init(width, layer, n_layers)[name] for layer in range(n_layers)]
    return jnp.stack(rows).reshape(shape)

  return init


def tensor_specs(cfg: Config) -> list[TensorSpec]:
  """The RWKV tensors and their stored shapes (nn.Linear: `[out, in]`, transposed on load).

  Random init (the null baseline): RWKV-4's decay, bonus and token-shift mixes (BlinkDL's formulas,
  as `rc_jax.models.mixers.rwkv_init`; Hugging Face's own init sets every bonus to 1); the rest as
  `loading.init_params` documents.
  """
  d, a, f = cfg.hidden_size, cfg.attention_hidden_size, cfg.intermediate_size

  layer = per_layer_specs("blocks.{i}.")

  specs = [
      TensorSpec("embeddings", "embeddings.weight", (cfg.vocab_size, d)),
      TensorSpec("pre_ln_scale", "blocks.0.pre_ln.weight", (d,), "ones"),
      TensorSpec("pre_ln_bias", "blocks.0.pre_ln.bias", (d,), "zeros"),
      layer("ln1_scale", "ln1.weight", (d,), "ones"),
      layer("ln1_bias", "ln1.bias", (d,), "zeros"),
      layer("ln2_scale", "ln2.weight", (d,), "ones"),
      layer("ln2_bias", "ln2.bias", (d,), "zeros"),
      layer("time_decay", "attention.time_decay", (a,), _rwkv4_init("decay")),
      layer("time_first", "attention.time_first", (a,), _rwkv4_init("bonus")),
      layer("att_mix_k", "attention.time_mix_key", (1, 1, d), _rwkv4_init("mix_k")),
      layer("att_mix_v", "attention.time_mix_value", (1, 1, d), _rwkv4_init("mix_v")),
      layer("att_mix_r", "attention.time_mix_receptance", (1, 1, d), _rwkv4_init("mix_r")),
      layer("att_key", "attention.key.weight", (a, d), transpose=True),
      layer("att_value", "attention.value.weight", (a, d), transpose=True),
      layer("att_receptance", "attention.receptance.weight", (a, d), transpose=True),
      layer("att_output", "attention.output.weight", (d, a), transpose=True),
      layer("ffn_mix_k", "feed_forward.time_mix_key", (1, 1, d), _rwkv4_init("mix_k")),
      layer("ffn_mix_r", "feed_forward.time_mix_receptance", (1, 1, d), _rwkv4_init("mix_k")),
      layer("ffn_key", "feed_forward.key.weight", (f, d), transpose=True),
      layer("ffn_receptance", "feed_forward.receptance.weight", (d, d), transpose=True),
      layer("ffn_value", "feed_forward.value.weight", (d, f), transpose=True),
      TensorSpec("ln_out_scale", "ln_out.weight", (d,), "ones"),
      TensorSpec("ln_out_bias", "ln_out.bias", (d,), "zeros"),
  ]
  if not cfg.tie_word_embeddings:
    specs.append(TensorSpec("head", "head.weight", (cfg.vocab_size, d), optional=True,
                            prefixed=False))
  return specs


def _shift(x: jax.Array) -> jax.Array:
  """`x_{t-1}` along the token axis of `[B, T, D]`, zeros at t = 0."""
  return jnp.pad(x, ((0, 0), (1, 0), (0, 0)))[:, :-1]


def _mix(x: jax.Array, previous: jax.Array, m: jax.Array) -> jax.Array:
  m = m.reshape(-1)
  return x * m + previous * (1 - m)


def _time_mixing(r, k, v, w, u, n_heads: int):
  """`rwkv_mixer` one head at a time: `(sigmoid(r) * wkv [B, T, A], weights [B, H, T, T],
  key_norms [B, H, T], prior [H, T, T])`."""
  b, t, a = k.shape
  split = lambda z: jnp.moveaxis(z.reshape(z.shape[:-1] + (n_heads, a // n_heads)), -2, 0)

  def head(args):
    r_h, k_h, v_h, w_h, u_h = args
    out, routing = routers.rwkv_mixer(r_h, k_h, v_h, w_h, u_h, n_heads=1)
    _, prior = routers.rwkv_mixer(r_h[:1], k_h[:1], v_h[:1], w_h, u_h, n_heads=1, content=False)
    return out, routing.weights[:, 0], routing.key_norms[:, 0], prior.weights[0, 0]

  out, weights, key_norms, prior = jax.lax.map(head, tuple(map(split, (r, k, v, w, u))))
  out = jnp.moveaxis(out, 0, -2).reshape(b, t, a)
  return out, jnp.moveaxis(weights, 0, 1), jnp.moveaxis(key_norms, 0, 1), prior


def embed(params: dict[str, Any], token_ids: jax.Array, token_mask: jax.Array,
          cfg: Config) -> tuple[jax.Array, jax.Array]:
  """`(carry, embeddings)`: `pre_ln(embeddings[x])` and `embeddings[x]`, `[B, T, D]`."""
  del token_mask
  embeddings = params["embeddings"][token_ids]
  h = layers.layer_norm(embeddings, params["pre_ln_scale"], params["pre_ln_bias"],
                        cfg.layer_norm_eps)
  return h, embeddings


def block(h: jax.Array, p: dict[str, jax.Array], index: jax.Array, token_mask: jax.Array,
          cfg: Config) -> tuple[jax.Array, layers.LayerOutput]:
  """Layer `index` (int32 scalar: its rescaling) of `h [B, T, D]` with its params `p`."""
  eps = cfg.layer_norm_eps
  if cfg.rescale_every > 0:
    scale = jnp.exp2(-(index // cfg.rescale_every).astype(jnp.float32)).astype(h.dtype)
    halve_after = (index + 1) % cfg.rescale_every == 0
  else:
    scale, halve_after = jnp.ones((), h.dtype), False
  x = layers.layer_norm(h, p["ln1_scale"], p["ln1_bias"], eps)
  previous = _shift(x)
  r, k, v = (layers.dense(_mix(x, previous, p[f"att_mix_{name}"]), p[f"att_{kernel}"])
             for name, kernel in (("r", "receptance"), ("k", "key"), ("v", "value")))
  w = jnp.exp(p["time_decay"].astype(jnp.float32))
  out, weights, key_norms, prior = _time_mixing(r, k, v, w, p["time_first"], cfg.num_heads)
  h = h + layers.dense(out, p["att_output"]) * scale
  x = layers.layer_norm(h, p["ln2_scale"], p["ln2_bias"], eps)
  previous = _shift(x)
  key = jnp.square(jax.nn.relu(layers.dense(_mix(x, previous, p["ffn_mix_k"]), p["ffn_key"])))
  gate = jax.nn.sigmoid(layers.dense(_mix(x, previous, p["ffn_mix_r"]), p["ffn_receptance"]))
  h = h + gate * layers.dense(key, p["ffn_value"]) * scale
  h = jnp.where(halve_after, h / 2, h)
  full_mask = layers.routing_mask(token_mask, causal=True)
  routing = Routing(weights=row_normalise(weights, full_mask), mask=full_mask,
                    key_norms=key_norms)
  prior = Routing(weights=row_normalise(jnp.broadcast_to(prior, weights.shape), full_mask),
                  mask=full_mask, key_norms=jnp.zeros(key_norms.shape, jnp.float32))
  return h, layers.LayerOutput(hidden=h, routing=routing, prior=prior)


def final(params: dict[str, Any], h: jax.Array, cfg: Config) -> jax.Array:
  """`ln_out` of the last layer's output."""
  del cfg
  return layers.layer_norm(h, params["ln_out_scale"], params["ln_out_bias"], LN_OUT_EPS)


def logits(params: dict[str, Any], final_hidden: jax.Array, cfg: Config) -> jax.Array:
  """LM logits `[..., V]` (float32) of final-normed hidden states: `head`, or the embeddings when
  `tie_word_embeddings`."""
  return layers.lm_logits(params, final_hidden, "head", tied=cfg.tie_word_embeddings)


# what `rc_jax.pretrained.load` reads to recognise and find this architecture
MODEL_TYPE = "rwkv"
PREFIXES = ("rwkv.", "")
PROBE_TENSOR = "embeddings.weight"
