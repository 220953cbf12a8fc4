"""Parity of rc_jax.pretrained's Mamba and RWKV-4 forwards with Hugging Face `transformers`.

Tiny models built offline from `MambaConfig` / `RwkvConfig` (Hugging Face's initialisation, every
parameter then perturbed so that biases, norms and decays all matter) are saved with
`save_pretrained(safe_serialization=True)` and loaded with `pretrained.load`. Checked on a batch
with right padding, left padding and none:

  - hidden states and logits against the PyTorch model (1e-4);
  - each layer's routing (weights, row_mass, key_norms) and positional prior against a float64
    NumPy reference built naively from the torch model's own mixer inputs (captured by hooks): the
    explicit `[T, T, C, N]` hidden-attention kernel for Mamba, the per-channel WKV softmax for RWKV.

Without torch (`ArchitectureTest`): the default head rule, checkpoint names (mamba_ssm's
`embedding.weight`, an optional untied head), Mamba's random init, and a long probe (T = 512)
through a tiny Mamba whose compiled forward's temporary memory stays far below the `[T, T, C, N]`
kernel it never builds. `BFloat16Test` (marked slow) runs the `dtype=bfloat16` path.

Needs the test extra (torch, transformers) for the parity classes; skipped without it.
"""

import dataclasses
import functools
import json
import os
import shutil
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from rc_jax import pretrained
from rc_jax.pretrained import layers, loading

try:
  import torch
  import transformers
except ImportError:  # the runtime-only install
  torch = transformers = None

_NEEDS_HF = "needs torch and transformers (install the test extra)"
TOL = 1e-4
VOCAB = 64


def _mamba(**overrides):
  config = dict(hidden_size=16, state_size=4, num_hidden_layers=2, vocab_size=VOCAB, expand=2)
  return "MambaForCausalLM", transformers.MambaConfig(**{**config, **overrides})


def _rwkv(**overrides):
  config = dict(hidden_size=32, num_hidden_layers=2, vocab_size=VOCAB, context_length=32)
  return "RwkvForCausalLM", transformers.RwkvConfig(**{**config, **overrides})


# case -> (model class and config, num_heads override or None for the default rule)
CASES = {
    "mamba_tied_4_heads": (lambda: _mamba(), 4),
    "mamba_untied_bias_no_conv_bias": (lambda: _mamba(
        use_bias=True, use_conv_bias=False, tie_word_embeddings=False, conv_kernel=3,
        time_step_rank=3, residual_in_fp32=False), None),
    "rwkv_untied_rescale_every_layer_4_heads": (lambda: _rwkv(rescale_every=1), 4),
    "rwkv_tied_3_heads_no_rescale": (lambda: _rwkv(
        hidden_size=48, intermediate_size=40, tie_word_embeddings=True, rescale_every=0), None),
}


def _perturb(model, seed: int, std: float = 0.15) -> None:
  """Adds N(0, std^2) to every parameter (keeps Hugging Face's structured init: A_log, decays)."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for param in model.parameters():
      param.add_(torch.randn(param.shape, generator=generator) * std)


def _inputs(seed: int, batch: int = 3, length: int = 12):
  """Random ids with right padding (row 0), left padding (row 1) and none (row 2)."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, VOCAB, size=(batch, length))
  mask = np.ones((batch, length), np.int64)
  mask[0, -4:] = 0
  mask[1, :3] = 0
  return ids, mask


def _tempdir(test) -> str:
  path = tempfile.mkdtemp()
  test.addCleanup(shutil.rmtree, path, ignore_errors=True)
  return path


def _softplus(x):
  return np.logaddexp(0.0, x)


def _full_mask(mask):
  real = mask.astype(bool)
  t = mask.shape[1]
  return real[:, None, :, None] & real[:, None, None, :] & np.tril(np.ones((t, t), bool))


def _heads(x, n_heads):
  """`[..., C] -> [..., H, C/H]`."""
  return x.reshape(x.shape[:-1] + (n_heads, x.shape[-1] // n_heads))


def _from_magnitudes(m, full):
  """Row-normalised weights and row mass of magnitudes `[B, H, T, S]` over the mask."""
  m = np.where(full, m, 0.0)
  total = m.sum(-1)
  return m / np.where(total > 0, total, 1.0)[..., None], total


def _mamba_reference(mixer, x, mask, n_heads):
  """(weights, row_mass, key_norms, prior weights, prior row_mass) of one Mamba layer, float64,
  from its mixer input `x [B, T, D]`, with the explicit `[B, T, T, C, N]` kernel."""
  p = {n: v.detach().double().numpy() for n, v in mixer.named_parameters()}
  c, n, r = mixer.intermediate_size, mixer.ssm_state_size, mixer.time_step_rank
  real = mask[..., None].astype(np.float64)
  xz = (x.astype(np.float64) * real) @ p["in_proj.weight"].T + p.get("in_proj.bias", 0.0)
  u = xz[..., :c]
  width = p["conv1d.weight"].shape[-1]
  padded = np.pad(u, ((0, 0), (width - 1, 0), (0, 0)))
  conv = sum(p["conv1d.weight"][:, 0, k] * padded[:, k:k + u.shape[1]] for k in range(width))
  conv = conv + p.get("conv1d.bias", 0.0)
  u = conv / (1 + np.exp(-conv)) * real                                      # silu
  xp = u @ p["x_proj.weight"].T
  delta = _softplus(xp[..., :r] @ p["dt_proj.weight"].T + p["dt_proj.bias"])  # [B, T, C]
  b_mat, c_mat = xp[..., r:r + n], xp[..., r + n:]                           # [B, T, N]
  a = -np.exp(p["A_log"])                                                    # [C, N]
  full = _full_mask(mask)
  t = x.shape[1]
  later = np.arange(t)[:, None] >= np.arange(t)[None, :]

  def magnitudes(delta, b_mat, c_mat):
    cum = np.cumsum(delta[..., None] * a, axis=1)                            # [B, T, C, N]
    log_decay = cum[:, :, None] - cum[:, None, :]                            # [B, t, s, C, N]
    decay = np.exp(np.where(later[None, :, :, None, None], log_decay, -np.inf))
    kernel = np.einsum("btn,btscn,bsc,bsn->btsc", c_mat, decay, delta, b_mat)
    return np.moveaxis(np.abs(_heads(kernel, n_heads)).sum(-1), -1, 1)      # [B, H, T, S]

  weights, row_mass = _from_magnitudes(magnitudes(delta, b_mat, c_mat), full)
  key_norms = (np.linalg.norm(_heads(delta, n_heads), axis=-1)
               * np.linalg.norm(b_mat, axis=-1)[..., None])
  share = mask / mask.sum(1, keepdims=True)
  means = [np.broadcast_to(np.einsum("bt,btx->bx", share, z)[:, None], z.shape)
           for z in (delta, b_mat, c_mat)]
  prior, prior_mass = _from_magnitudes(magnitudes(*means), full)
  return weights, row_mass, np.moveaxis(key_norms, -1, 1), prior, prior_mass


def _rwkv_reference(attention, x, mask, n_heads):
  """(weights, key_norms, prior weights) of one RWKV layer, float64, from the time-mixing input
  `x [B, T, D]` (the ln1 output), with the explicit per-channel `[B, C, T, T]` softmax."""
  p = {n: v.detach().double().numpy() for n, v in attention.named_parameters()}
  x = x.astype(np.float64)
  previous = np.pad(x, ((0, 0), (1, 0), (0, 0)))[:, :-1]
  mix = p["time_mix_key"].reshape(-1)
  k = (x * mix + previous * (1 - mix)) @ p["key.weight"].T                   # [B, T, C]
  w, u = np.exp(p["time_decay"]), p["time_first"]
  t = x.shape[1]
  lag = np.arange(t)[:, None] - np.arange(t)[None, :]
  full = _full_mask(mask)

  def weights_of(k):
    base = np.where(lag == 0, u[:, None, None], -(lag - 1) * w[:, None, None])  # [C, t, s]
    logits = np.where(lag >= 0, np.swapaxes(k, 1, 2)[:, :, None, :] + base, -np.inf)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    per_channel = e / e.sum(-1, keepdims=True)                               # [B, C, t, s]
    per_head = per_channel.reshape((k.shape[0], n_heads, -1, t, t)).mean(2)
    return _from_magnitudes(per_head, full)[0]

  key_norms = np.moveaxis(np.linalg.norm(_heads(k, n_heads), axis=-1), -1, 1)
  return weights_of(k), key_norms, weights_of(np.zeros_like(k))


def _capture_inputs(modules):
  """Registers forward pre-hooks that record each module's first positional input."""
  captured = [None] * len(modules)

  def hook(index):
    def record(module, args):
      del module
      captured[index] = args[0].detach().double().numpy()
    return record

  handles = [m.register_forward_pre_hook(hook(i)) for i, m in enumerate(modules)]
  return captured, handles


class _HFTestCase(parameterized.TestCase):
  """Builds, saves and loads tiny Hugging Face models (one torch thread while it runs)."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    # one torch thread: on 2 busy cores, torch's OpenMP threads made each tiny RWKV init (16 QRs)
    # take ~1.7 s instead of ~10 ms
    cls._torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)

  @classmethod
  def tearDownClass(cls):
    torch.set_num_threads(cls._torch_threads)
    super().tearDownClass()

  def _load_pair(self, case: str, seed: int):
    make, n_heads = CASES[case]
    model_class, config = make()
    torch.manual_seed(seed)
    model = getattr(transformers, model_class)(config)
    _perturb(model, seed)
    path = _tempdir(self)
    model.save_pretrained(path, safe_serialization=True)
    hf = getattr(transformers, model_class).from_pretrained(path, dtype=torch.float32).eval()
    ours = pretrained.load(path)
    if n_heads is not None:
      ours = dataclasses.replace(ours, config=dataclasses.replace(ours.config, num_heads=n_heads))
    return hf, ours


@absltest.skipIf(transformers is None, _NEEDS_HF)
@pytest.mark.slow
class SSMRNNParityTest(_HFTestCase):

  @parameterized.named_parameters((name, name) for name in CASES)
  def test_matches_transformers(self, case):
    hf, model = self._load_pair(case, seed=len(case))
    ids, mask = _inputs(seed=len(case))
    is_mamba = model.model_type == "mamba"
    base = hf.base_model
    mixers = [block.mixer for block in base.layers] if is_mamba else [
        block.attention for block in base.blocks]
    captured, handles = _capture_inputs(mixers)
    with torch.no_grad():
      hf_out = hf(torch.tensor(ids), attention_mask=torch.tensor(mask), output_hidden_states=True)
      embeddings = base.embeddings(torch.tensor(ids)).numpy()
    for handle in handles:
      handle.remove()
    out = model.forward(ids, mask)
    n = model.config.num_layers

    # Hugging Face's tuple: each layer's output, then the final-normed last one (no embeddings)
    hf_hidden = [h.numpy() for h in hf_out.hidden_states]
    self.assertLen(hf_hidden, n + 1)
    expected = [embeddings] + hf_hidden[:n - 1] + [hf_hidden[n]]
    self.assertLen(out.hidden_states, n + 1)
    for ours, theirs in zip(out.hidden_states, expected):
      np.testing.assert_allclose(ours, theirs, atol=TOL, rtol=0)
    np.testing.assert_allclose(model.logits(out.hidden_states[-1]), hf_out.logits.numpy(),
                               atol=TOL, rtol=0)

    self.assertLen(out.routings, n)
    self.assertLen(out.priors, n)
    heads = model.config.num_heads
    full = _full_mask(mask)
    for layer in range(n):
      routing, prior = out.routings[layer], out.priors[layer]
      chex.assert_shape(routing.weights, (3, heads, 12, 12))
      chex.assert_trees_all_equal_shapes(routing.weights, prior.weights)
      np.testing.assert_array_equal(np.broadcast_to(routing.mask, full.shape), full)
      if is_mamba:
        weights, row_mass, key_norms, prior_weights, prior_mass = _mamba_reference(
            mixers[layer], captured[layer], mask, heads)
        np.testing.assert_allclose(routing.row_mass, row_mass, rtol=TOL, atol=1e-6)
        np.testing.assert_allclose(prior.row_mass, prior_mass, rtol=TOL, atol=1e-6)
      else:
        weights, key_norms, prior_weights = _rwkv_reference(mixers[layer], captured[layer], mask,
                                                            heads)
        self.assertIsNone(routing.row_mass)
      np.testing.assert_allclose(routing.weights, weights, atol=TOL, rtol=0)
      np.testing.assert_allclose(routing.key_norms, key_norms, rtol=TOL, atol=1e-6)
      np.testing.assert_allclose(prior.weights, prior_weights, atol=TOL, rtol=0)

    # the random-init baseline: same pytree, new values, a finite forward (the compiled program)
    null = model.random_init(jax.random.key(1))
    chex.assert_trees_all_equal_shapes_and_dtypes(null.params, model.params)
    self.assertFalse(np.allclose(null.params["embeddings"], model.params["embeddings"]))
    null_out = null.forward(ids, mask)
    chex.assert_tree_all_finite(null_out)
    rows = np.sum(null_out.routings[-1].weights, -1)
    np.testing.assert_allclose(rows[np.broadcast_to(np.any(full, -1), rows.shape)], 1.0,
                               atol=1e-5)

  def test_base_model_checkpoint_loads_without_its_head(self):
    """The untied LM head is optional: an RwkvModel checkpoint loads, and has no logits."""
    config = _rwkv()[1]
    path = _tempdir(self)
    transformers.RwkvModel(config).save_pretrained(path, safe_serialization=True)
    model = pretrained.load(path)
    self.assertNotIn("head", model.params)
    self.assertNotIn("head", model.random_init(jax.random.key(0)).params)
    with self.assertRaisesRegex(ValueError, "no head.weight"):
      model.logits(jnp.zeros((1, 2, config.hidden_size)))


@absltest.skipIf(transformers is None, _NEEDS_HF)
@pytest.mark.slow
class BFloat16Test(_HFTestCase):
  """The `dtype=bfloat16` path (weights cast, the recurrences and norms in float32)."""

  @parameterized.named_parameters(("mamba", "mamba_tied_4_heads"),
                                  ("rwkv", "rwkv_untied_rescale_every_layer_4_heads"))
  def test_bfloat16_compute_is_close(self, case):
    _, model = self._load_pair(case, seed=len(case))
    half = pretrained.load(model.path, dtype=jnp.bfloat16)
    half = dataclasses.replace(half, config=model.config)
    ids, mask = _inputs(seed=len(case))
    out, out_half = model.forward(ids, mask), half.forward(ids, mask)
    self.assertEqual(jnp.bfloat16, out_half.hidden_states[-1].dtype)
    self.assertEqual(jnp.float32, out_half.routings[0].weights.dtype)
    pairs = zip(out.routings + out.priors, out_half.routings + out_half.priors)
    for routing, routing_half in pairs:
      np.testing.assert_allclose(routing_half.weights, routing.weights, atol=0.05)
    np.testing.assert_allclose(out_half.hidden_states[-1].astype(jnp.float32),
                               out.hidden_states[-1], atol=0.1, rtol=0.05)


def _tiny_mamba(num_layers: int = 2):
  hf = dict(model_type="mamba", hidden_size=16, state_size=4, num_hidden_layers=num_layers,
            vocab_size=VOCAB, expand=2)
  cfg = pretrained.mamba.Config.from_hf(hf, "test")
  params = loading.init_params(jax.random.key(0), pretrained.mamba.tensor_specs(cfg), num_layers,
                               cfg.initializer_range, jnp.float32)
  return pretrained.PretrainedModel(name="tiny-mamba", model_type="mamba", config=cfg,
                                    params=params)


def _write_checkpoint(path, hf_config, rename=None):
  """config.json and random weights under Hugging Face's names (per the tensor specs), with
  `rename` mapping some stored names to others; returns the tensors."""
  arch = pretrained.ARCHITECTURES[hf_config["model_type"]]
  cfg = arch.Config.from_hf(hf_config, "test")
  rng = np.random.default_rng(0)
  tensors = {}
  for spec in arch.tensor_specs(cfg):
    names = ([spec.hf_name.format(i=i) for i in range(cfg.num_layers)] if spec.per_layer
             else [spec.hf_name])
    for name in names:
      name = (rename or {}).get(name, name)
      tensors[(arch.PREFIXES[0] if spec.prefixed else "") + name] = (
          0.1 * rng.normal(size=spec.hf_shape)).astype(np.float32)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(hf_config, f)
  safetensors.numpy.save_file(tensors, os.path.join(path, "model.safetensors"))
  return tensors


class ArchitectureTest(absltest.TestCase):
  """Checks without torch: the head rule, checkpoint names, random init, a long probe."""

  def test_default_head_rule(self):
    """Heads of gcd(C, 64) channels: 64 for released checkpoints' widths."""
    for model_type, channels, expected in (("mamba", 1536, 24), ("mamba", 5120, 80),
                                           ("mamba", 32, 1), ("rwkv", 768, 12),
                                           ("rwkv", 48, 3)):
      arch = pretrained.ARCHITECTURES[model_type]
      if model_type == "mamba":
        hf = dict(hidden_size=channels // 2, num_hidden_layers=1, vocab_size=8)
      else:
        hf = dict(hidden_size=32, attention_hidden_size=channels, num_hidden_layers=1,
                  vocab_size=8)
      self.assertEqual(expected, arch.Config.from_hf(hf, "test").num_heads)

  @pytest.mark.slow
  def test_long_probe_runs_in_bounded_memory(self):
    t = 512
    model = _tiny_mamba()
    cfg = model.config
    ids = jnp.asarray(np.random.default_rng(0).integers(0, VOCAB, (1, t)), jnp.int32)
    mask = jnp.ones((1, t), jnp.int32)
    forward = jax.jit(functools.partial(layers.scan_forward, pretrained.mamba),
                      static_argnames=("cfg",))
    compiled = forward.lower(model.params, ids, mask, cfg=cfg).compile()
    kernel_bytes = t * t * cfg.intermediate_size * cfg.state_size * 4   # the [T, T, C, N] kernel
    temp = compiled.memory_analysis().temp_size_in_bytes
    self.assertLess(temp, kernel_bytes / 8)
    out = compiled(model.params, ids, mask)
    routing = out.routings[-1]
    chex.assert_shape(routing.weights, (1, cfg.num_heads, t, t))
    chex.assert_tree_all_finite(out)
    np.testing.assert_allclose(np.sum(routing.weights, -1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.sum(out.priors[-1].weights, -1), 1.0, atol=1e-5)

  def test_checkpoint_names(self):
    """mamba_ssm's `embedding.weight` is read as `embeddings.weight`; an untied head is optional
    and lives outside the model prefix."""
    path = _tempdir(self)
    hf = dict(model_type="mamba", hidden_size=16, state_size=4, num_hidden_layers=1,
              vocab_size=VOCAB, tie_word_embeddings=False)
    tensors = _write_checkpoint(path, hf, rename={"embeddings.weight": "embedding.weight"})
    self.assertIn("lm_head.weight", tensors)
    model = pretrained.load(path)
    np.testing.assert_array_equal(model.params["embeddings"],
                                  tensors["backbone.embedding.weight"])
    np.testing.assert_array_equal(model.params["lm_head"], tensors["lm_head.weight"])
    np.testing.assert_array_equal(model.params["layers"]["x_kernel"][0],
                                  tensors["backbone.layers.0.mixer.x_proj.weight"].T)

  def test_random_init_uses_the_ssm_init(self):
    model = _tiny_mamba()
    a_log = np.asarray(model.params["layers"]["a_log"])
    np.testing.assert_allclose(a_log, np.broadcast_to(np.log(np.arange(1.0, 5.0)), a_log.shape))
    dt = np.log1p(np.exp(np.asarray(model.params["layers"]["dt_bias"])))
    self.assertTrue(np.all((dt >= 1e-4 - 1e-9) & (dt <= 0.1 + 1e-6)))
    with self.assertRaisesRegex(ValueError, "logits are not available for model_type 'gpt2'"):
      dataclasses.replace(model, model_type="gpt2",
                          config=pretrained.gpt2.Config.from_hf(
                              dict(n_layer=1, n_head=1, n_embd=4, vocab_size=8, n_positions=4),
                              "test")).logits(jnp.zeros((1, 1, 4)))


if __name__ == "__main__":
  absltest.main()
