"""Tests for rc_jax.routers.rwkv (RWKV-4-style WKV router) and models.mixers.RWKVMixer."""

import math
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rc_jax.engine import config_lib
from rc_jax.models import build_model
from rc_jax.models import mixers
from rc_jax.routers import rwkv

T, C = 10, 4
BRAKES = (0.0, 0.05, 0.2, 1.0, 3.0)

_mixer = jax.jit(rwkv.rwkv_mixer, static_argnames=("n_heads", "content", "gate"))


def _inputs(leading=(2,), seed=0, key_scale=1.0):
  keys = jax.random.split(jax.random.key(seed), 5)
  r, k, v = (jax.random.normal(key, leading + (T, C)) for key in keys[:3])
  w = jnp.exp(jax.random.normal(keys[3], (C,)) - 1.0)
  u = jax.random.normal(keys[4], (C,))
  return r, key_scale * k, v, w, u


def _loss(r, k, v, w, u, brake, n_heads=1, content=True, gate=True):
  out, routing = _mixer(r, k, v, w, u, brake=brake, n_heads=n_heads, content=content, gate=gate)
  return (jnp.sum(jnp.sin(out)) + jnp.sum(routing.weights[..., -1, :] ** 2)
          + jnp.sum(routing.key_norms))


_loss_grads = jax.jit(jax.grad(_loss, argnums=range(6)),
                      static_argnames=("n_heads", "content", "gate"))


def _reference_kernel(k, w, u, brake, bonus=True):
  """`A [..., C, T, T]` in float64 by loops: with bonus the module docstring's logits, without it
  one decay law `k_s - (t - s)(w + beta)` for every s <= t. No stabilisation: moderate k only."""
  k, w, u = (np.asarray(a, np.float64) for a in (k, w, u))
  n = k.shape[-2]
  logits = np.full(k.shape[:-2] + (k.shape[-1], n, n), -np.inf)
  for t in range(n):
    for s in range(t + 1):
      if bonus and s == t:
        logits[..., t, s] = u + k[..., t, :]
      elif bonus:
        logits[..., t, s] = k[..., s, :] - (t - 1 - s) * w - brake * (t - s)
      else:
        logits[..., t, s] = k[..., s, :] - (t - s) * (w + brake)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  return weights / weights.sum(-1, keepdims=True)


def _reference_wkv(k, v, w, u, brake, bonus=True):
  """`wkv [..., T, C]` from the reference kernel."""
  return np.einsum("...cts,...sc->...tc", _reference_kernel(k, w, u, brake, bonus),
                   np.asarray(v, np.float64))


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def _head_mean(kernel_CxTxT, n_heads):
  """`[..., H, T, T]`: each head the mean over its contiguous channels, by a loop."""
  width = kernel_CxTxT.shape[-3] // n_heads
  return np.stack([kernel_CxTxT[..., h * width:(h + 1) * width, :, :].mean(-3)
                   for h in range(n_heads)], axis=-3)


@pytest.mark.slow
class RwkvMixerTest(parameterized.TestCase):

  @parameterized.parameters(((), 1), ((2, 3), 1), ((2,), 2), ((), 4))
  def test_shapes(self, leading, n_heads):
    out, routing = _mixer(*_inputs(leading), brake=0.1, n_heads=n_heads)
    chex.assert_shape(out, leading + (T, C))
    chex.assert_shape(routing.weights, leading + (n_heads, T, T))
    chex.assert_shape(routing.mask, (T, T))
    chex.assert_shape(routing.key_norms, leading + (n_heads, T))
    self.assertEqual(routing.mask.dtype, jnp.bool_)
    self.assertIsNone(routing.row_mass)

  def test_causal_rows_sum_to_one_and_key_norms(self):
    r, k, v, w, u = _inputs()
    _, routing = _mixer(r, k, v, w, u, brake=0.2)
    np.testing.assert_array_equal(routing.mask, np.tril(np.ones((T, T), bool)))
    np.testing.assert_array_equal(jnp.where(routing.full_mask(), 0.0, routing.weights), 0.0)
    self.assertTrue(np.all(routing.weights >= 0))
    chex.assert_trees_all_close(routing.weights.sum(-1), jnp.ones((2, 1, T)), atol=1e-6)
    chex.assert_trees_all_close(routing.key_norms[:, 0], jnp.linalg.norm(k, axis=-1), rtol=1e-6)

  @parameterized.parameters(1, 2, 4)
  def test_heads_average_their_channels(self, n_heads):
    r, k, v, w, u = _inputs()
    out, routing = _mixer(r, k, v, w, u, brake=0.3, n_heads=n_heads)
    expected = _head_mean(_reference_kernel(k, w, u, 0.3), n_heads)
    chex.assert_trees_all_close(routing.weights, expected.astype(np.float32), atol=1e-6)
    chex.assert_trees_all_close(routing.weights.sum(-1), jnp.ones((2, n_heads, T)), atol=1e-6)
    width = C // n_heads
    norms = np.stack([np.sqrt((np.asarray(k)[..., h * width:(h + 1) * width] ** 2).sum(-1))
                      for h in range(n_heads)], axis=-2)
    chex.assert_trees_all_close(routing.key_norms, norms.astype(np.float32), rtol=1e-6)
    # heads group channels for the routing only: the output does not depend on them
    chex.assert_trees_all_close(out, _mixer(r, k, v, w, u, brake=0.3)[0], rtol=1e-6, atol=1e-7)

  @parameterized.parameters(0.0, 0.6)
  def test_matches_reference_formula(self, brake):
    r, k, v, w, u = _inputs()
    out, _ = _mixer(r, k, v, w, u, brake=brake)
    expected = _sigmoid(r) * _reference_wkv(k, v, w, u, brake)
    chex.assert_trees_all_close(out, expected.astype(np.float32), rtol=1e-5, atol=1e-6)

  @parameterized.parameters(0.0, 0.6)
  def test_gate_off_is_plain_wkv(self, brake):
    r, k, v, w, u = _inputs()
    out, routing = _mixer(None, k, v, w, u, brake=brake, gate=False)
    chex.assert_trees_all_close(out, _reference_wkv(k, v, w, u, brake).astype(np.float32),
                                rtol=1e-5, atol=1e-6)
    # r is ignored without the gate; the routing does not depend on the gate
    chex.assert_trees_all_equal((out, routing), _mixer(r, k, v, w, u, brake=brake, gate=False))
    chex.assert_trees_all_close(routing, _mixer(r, k, v, w, u, brake=brake)[1])

  @parameterized.parameters(0.0, 0.6)
  def test_no_bonus_is_u_equal_w(self, brake):
    """bonus=False (u = w) is one decay law `k_s - (t - s)(w + beta)` for every s <= t."""
    r, k, v, w, u = _inputs()
    out, routing = _mixer(r, k, v, w, w, brake=brake)
    chex.assert_trees_all_close(
        out, (_sigmoid(r) * _reference_wkv(k, v, w, None, brake, bonus=False)).astype(np.float32),
        rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(
        routing.weights,
        _reference_kernel(k, w, None, brake, bonus=False).mean(-3, keepdims=True).astype(
            np.float32), atol=1e-6)

  @parameterized.parameters(0.0, 0.4)
  def test_content_free_prior_is_analytic(self, brake):
    r, k, v, w, u = _inputs()
    out, prior = _mixer(r, k, v, w, u, brake=brake, n_heads=2, content=False)
    w64, u64 = np.asarray(w, np.float64), np.asarray(u, np.float64)
    kernel = np.zeros((C, T, T))
    for t in range(T):
      logits = [u64 if s == t else -(t - 1 - s) * w64 - brake * (t - s) for s in range(t + 1)]
      logits = np.stack(logits, axis=-1)
      kernel[:, t, :t + 1] = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    expected = np.broadcast_to(_head_mean(kernel, 2), (2, 2, T, T))
    chex.assert_trees_all_close(prior.weights, expected.astype(np.float32), atol=1e-6)
    np.testing.assert_array_equal(prior.key_norms, np.zeros((2, 2, T)))
    # the output is the WKV with k = 0 as well
    expected_out = _sigmoid(r) * np.einsum("cts,...sc->...tc", kernel, np.asarray(v, np.float64))
    chex.assert_trees_all_close(out, expected_out.astype(np.float32), rtol=1e-5, atol=1e-6)
    # independent of the keys
    chex.assert_trees_all_close((out, prior),
                                _mixer(r, 3.0 * k + 1.0, v, w, u, brake=brake, n_heads=2,
                                       content=False), rtol=1e-6, atol=1e-7)

  @parameterized.parameters((0.0, 1.0), (0.7, 1.0), (0.7, 80.0))
  def test_recurrence_equals_kernel_form(self, brake, key_scale):
    r, k, v, w, u = _inputs(key_scale=key_scale)
    out, routing = _mixer(r, k, v, w, u, brake=brake)
    kernel = rwkv.wkv_kernel(k, w, u, brake=brake)
    chex.assert_shape(kernel, (2, C, T, T))
    chex.assert_trees_all_close(routing.weights[:, 0], kernel.mean(-3), rtol=1e-6, atol=1e-7)
    kernel_out = jax.nn.sigmoid(r) * jnp.einsum("...cts,...sc->...tc", kernel, v)
    chex.assert_trees_all_close(out, kernel_out, rtol=1e-5, atol=1e-5)

  def test_zero_brake_is_default(self):
    inputs = _inputs()
    chex.assert_trees_all_equal(_mixer(*inputs, brake=0.0), _mixer(*inputs))

  def test_brake_never_raises_farthest_mass(self):
    inputs = _inputs()
    farthest = jax.vmap(lambda b: _mixer(*inputs, brake=b)[1].weights[..., -1, 0])(
        jnp.array(BRAKES))
    self.assertTrue(np.all(np.diff(farthest, axis=0) <= 1e-7), farthest)
    self.assertLess(float(farthest[-1].max()), float(farthest[0].min()))

  def test_jit_equals_eager(self):
    inputs = _inputs()
    chex.assert_trees_all_close(_mixer(*inputs, brake=0.3, n_heads=2),
                                rwkv.rwkv_mixer(*inputs, brake=0.3, n_heads=2),
                                rtol=1e-5, atol=1e-6)

  def test_vmap_over_all_arguments_equals_loop(self):
    runs = [_inputs(seed=seed) for seed in range(3)]
    brakes = jnp.array([0.0, 0.4, 1.5])
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *runs)
    batched = jax.vmap(lambda inputs, b: _mixer(*inputs, brake=b))(stacked, brakes)
    for i in range(3):
      chex.assert_trees_all_close(jax.tree.map(lambda a: a[i], batched),
                                  _mixer(*runs[i], brake=brakes[i]), rtol=1e-5, atol=1e-6)

  @parameterized.parameters((1.0, 1, True, True), (200.0, 1, True, True), (200.0, 2, True, False),
                            (200.0, 2, False, True))
  def test_gradients_finite(self, key_scale, n_heads, content, gate):
    r, k, v, w, u = _inputs(key_scale=key_scale)
    self.assertGreater(float(jnp.abs(k).max()), 200.0 if key_scale > 1 else 0.0)
    out, routing = _mixer(r, k, v, w, u, brake=0.5, n_heads=n_heads, content=content, gate=gate)
    chex.assert_tree_all_finite((out, routing))
    grads = _loss_grads(r, k, v, w, u, 0.5, n_heads=n_heads, content=content, gate=gate)
    chex.assert_tree_all_finite(grads)
    self.assertGreater(float(jnp.abs(grads[5])), 0.0)

  def test_output_dtype_follows_inputs(self):
    r, k, v, w, u = _inputs()
    out, routing = _mixer(r.astype(jnp.bfloat16), k.astype(jnp.bfloat16), v.astype(jnp.bfloat16),
                          w, u)
    self.assertEqual(out.dtype, jnp.bfloat16)
    self.assertEqual(routing.weights.dtype, jnp.float32)

  def test_bad_inputs_raise(self):
    r, k, v, w, u = _inputs()
    with self.assertRaisesRegex(ValueError, "brake"):
      rwkv.rwkv_mixer(r, k, v, w, u, brake=-1.0)
    with self.assertRaisesRegex(ValueError, "w must"):
      rwkv.rwkv_mixer(r, k, v, w[:3], u)
    with self.assertRaisesRegex(ValueError, "u must"):
      rwkv.rwkv_mixer(r, k, v, w, u[None])
    with self.assertRaisesRegex(ValueError, "v must"):
      rwkv.rwkv_mixer(r, k, v[..., :3], w, u)
    with self.assertRaisesRegex(ValueError, "k must"):
      rwkv.rwkv_mixer(r[0, 0], k[0, 0], v[0, 0], w, u)
    with self.assertRaisesRegex(ValueError, "r must"):
      rwkv.rwkv_mixer(None, k, v, w, u)
    with self.assertRaisesRegex(ValueError, "n_heads=3 must divide"):
      rwkv.rwkv_mixer(r, k, v, w, u, n_heads=3)
    with self.assertRaisesRegex(ValueError, "n_heads must"):
      rwkv.rwkv_mixer(r, k, v, w, u, n_heads=0)


# ---------------------------------------------------------------------------------------------
# The Flax mixer

B, D = 2, 8
_X = jax.random.normal(jax.random.key(7), (B, T, D))
_SWITCHES = dict(gate=True, token_shift=True, bonus=True)


def _reference_mixer(params, x, brake, *, gate, token_shift, bonus, content):
  """The mixer by hand in float64: projections, WKV loops, gate, output projection."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  x = np.asarray(x, np.float64)
  previous = np.concatenate([np.zeros_like(x[:, :1]), x[:, :-1]], axis=1)

  def project(name):
    inputs = x * p[f"mix_{name}"] + previous * (1 - p[f"mix_{name}"]) if token_shift else x
    return inputs @ p[name]["kernel"]

  k = project("k") if content else np.zeros((B, T, D))
  w = np.exp(p["decay"])
  wkv = _reference_wkv(k, project("v"), w, p["bonus"] if bonus else None, brake, bonus=bonus)
  out = _sigmoid(project("r")) * wkv if gate else wkv
  return out @ p["out"]["kernel"], _reference_kernel(k, w, p.get("bonus"), brake, bonus)


def _init_apply(module, x=_X, brake=0.3):
  params = jax.jit(module.init)(jax.random.key(0), x, brake)["params"]
  apply = jax.jit(lambda p, x, b: module.apply({"params": p}, x, b, with_routing=True))
  return params, apply(params, x, brake)


@pytest.mark.slow
class RwkvModuleTest(parameterized.TestCase):

  @parameterized.parameters(
      dict(), dict(gate=False), dict(token_shift=False), dict(bonus=False),
      dict(gate=False, token_shift=False, bonus=False), dict(content=False))
  def test_mixer_matches_reference(self, **switches):
    content = switches.pop("content", True)
    switches = {**_SWITCHES, **switches}
    module = mixers.RWKVMixer(n_heads=2, layer=1, n_layers=3, content=content, **switches)
    params, (y, routing, prior) = _init_apply(module)
    self.assertEqual("r" in params, switches["gate"])
    self.assertEqual("bonus" in params, switches["bonus"])
    self.assertEqual(any(name.startswith("mix_") for name in params), switches["token_shift"])
    y_ref, kernel_ref = _reference_mixer(params, _X, 0.3, content=content, **switches)
    chex.assert_trees_all_close(y, y_ref.astype(np.float32), rtol=1e-4, atol=1e-5)
    chex.assert_shape(routing.weights, (B, 2, T, T))
    chex.assert_trees_all_close(routing.weights, _head_mean(kernel_ref, 2).astype(np.float32),
                                atol=1e-6)
    _, prior_ref = _reference_mixer(params, _X, 0.3, content=False, **switches)
    chex.assert_trees_all_close(prior.weights, _head_mean(prior_ref, 2).astype(np.float32),
                                atol=1e-6)
    if not content:
      chex.assert_trees_all_equal(prior, routing)

  def test_without_routing_returns_nones(self):
    module = mixers.RWKVMixer(n_heads=2)
    params = jax.jit(module.init)(jax.random.key(0), _X, 0.3)
    y, routing, prior = jax.jit(module.apply)(params, _X, 0.3)
    chex.assert_shape(y, (B, T, D))
    self.assertIsNone(routing)
    self.assertIsNone(prior)

  @parameterized.parameters(True, False)
  def test_token_shift_switch_sets_dependence_on_previous_token(self, token_shift):
    """Perturbing x_{p} changes the projections at p + 1 only through the token shift."""
    module = mixers.RWKVMixer(token_shift=token_shift)
    params = jax.jit(module.init)(jax.random.key(0), _X, 0.3)
    position = 4
    perturbed = _X.at[:, position].add(1.0)

    @jax.jit
    def projections(x):
      _, state = module.apply(params, x, 0.3, capture_intermediates=True)
      return {name: state["intermediates"][name]["__call__"][0] for name in ("r", "k", "v")}

    before, after = projections(_X), projections(perturbed)
    for name in ("r", "k", "v"):
      others = np.delete(np.arange(T), [position, position + 1])
      np.testing.assert_array_equal(after[name][:, others], before[name][:, others])
      changed = np.abs(after[name][:, position + 1] - before[name][:, position + 1]).max()
      if token_shift:
        self.assertGreater(changed, 1e-3, name)
      else:
        self.assertEqual(changed, 0.0, name)

  @parameterized.parameters((0, 1), (0, 3), (1, 3), (2, 3), (3, 4))
  def test_init_matches_rwkv4_formulas(self, layer, n_layers):
    width = 7
    init = mixers.rwkv_init(width, layer, n_layers)
    ratio_0_to_1 = layer / (n_layers - 1) if n_layers > 1 else 0.0
    ratio_1_to_almost0 = 1.0 - layer / n_layers
    for i in range(width):
      np.testing.assert_allclose(
          init["decay"][i], -5 + 8 * (i / (width - 1)) ** (0.7 + 1.3 * ratio_0_to_1), atol=1e-5)
      np.testing.assert_allclose(init["bonus"][i], math.log(0.3) + ((i + 1) % 3 - 1) * 0.5,
                                 atol=1e-6)
      np.testing.assert_allclose(init["mix_k"][i], (i / width) ** ratio_1_to_almost0, atol=1e-7)
      np.testing.assert_allclose(init["mix_v"][i],
                                 (i / width) ** ratio_1_to_almost0 + 0.3 * ratio_0_to_1,
                                 atol=1e-6)
      np.testing.assert_allclose(init["mix_r"][i], (i / width) ** (0.5 * ratio_1_to_almost0),
                                 atol=1e-7)
    # decay rates w = exp(decay) span [e^-5, e^3], slowest first
    decay = np.asarray(init["decay"])
    np.testing.assert_allclose(np.exp(decay[[0, -1]]), [math.exp(-5), math.exp(3)], rtol=1e-5)
    self.assertTrue(np.all(np.diff(decay) > 0))

  def test_init_in_the_module(self):
    module = mixers.RWKVMixer(n_heads=2, layer=2, n_layers=3)
    params = jax.jit(module.init)(jax.random.key(0), _X, 0.3)["params"]
    chex.assert_trees_all_close({name: params[name] for name in mixers.rwkv_init(D, 2, 3)},
                                mixers.rwkv_init(D, 2, 3))
    for name in ("r", "k", "v", "out"):  # orthogonal, not RWKV-4's zeros
      kernel = params[name]["kernel"]
      chex.assert_trees_all_close(kernel.T @ kernel, jnp.eye(D), atol=1e-5)

  def test_bad_layer_raises(self):
    with self.assertRaisesRegex(ValueError, "layer"):
      mixers.rwkv_init(D, 3, 3)

  def test_language_model_wires_config_and_layers(self):
    config = config_lib.base_config("rwkv", "tiny")
    config.model.update(n_heads=2, depth=2, bonus=False)
    model = build_model(config, n_outputs=config.task.vocab_size)
    tokens = jax.random.randint(jax.random.key(1), (2, 6), 0, config.task.vocab_size)
    params = jax.jit(model.init)(jax.random.key(0), tokens, 0.2)["params"]
    out = jax.jit(lambda p: model.apply({"params": p}, tokens, 0.2, with_routing=True))(params)
    width = config.model.width
    for layer in range(2):
      mixer = params[f"block_{layer}"]["RWKVMixer_0"]
      self.assertNotIn("bonus", mixer)
      chex.assert_trees_all_close(mixer["decay"], mixers.rwkv_init(width, layer, 2)["decay"])
      chex.assert_shape(out.routings[layer].weights, (2, 2, 6, 6))
      chex.assert_shape(out.priors[layer].weights, (2, 2, 6, 6))
      w = np.exp(np.asarray(mixer["decay"], np.float64))
      zeros = np.zeros((6, width))
      expected = _head_mean(_reference_kernel(zeros, w, None, 0.2, bonus=False), 2)
      chex.assert_trees_all_close(out.priors[layer].weights[0], expected.astype(np.float32),
                                  atol=1e-6)


_REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)


@pytest.mark.slow
@absltest.skipIf(config_lib.JAXLIB_VERSION < (0, 12), "jaxlib < 0.12 deadlocks here on 2 cores: "
                 "config_lib.group_runs_on_old_jaxlib runs these sweeps in groups of 4 there")
class ManyVmappedRunsTest(parameterized.TestCase):
  """16 RWKV (or SSM) runs vmapped together at the cpu shape deadlocked XLA:CPU in their first
  execution (jaxlib 0.10.2, 2 cores: every thread idle on a futex); the sweep must finish."""

  @parameterized.parameters("rwkv", "ssm")
  def test_sixteen_vmapped_runs_finish(self, family):
    with tempfile.TemporaryDirectory() as tmp:
      result = subprocess.run(
          [sys.executable, os.path.join(_REPO, "experiments", "sweep.py"),
           "--config=" + os.path.join(_REPO, "configs", f"{family}.py") + ":cpu",
           "--config.execution.mode=vmap", "--config.sweep.seeds=(0,1)",
           "--config.train.steps=100", "--config.train.chunk_steps=50", f"--workdir={tmp}/run",
           f"--compilation_cache_dir={tmp}/cache"],
          capture_output=True, text=True, timeout=600, check=False)
      self.assertEqual(result.returncode, 0, result.stderr[-2000:])
      self.assertTrue(os.path.isfile(os.path.join(tmp, "run", "summary.json")))


if __name__ == "__main__":
  absltest.main()
