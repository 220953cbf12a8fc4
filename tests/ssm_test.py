"""Tests for rc_jax.routers.scan, rc_jax.routers.ssm (selective SSM router) and the SSM mixer."""

import math

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rc_jax.models import mixers
from rc_jax.routers import scan
from rc_jax.routers import ssm

T, C, N = 8, 4, 3
BRAKES = (0.0, 0.05, 0.2, 1.0, 3.0)

_ssm = jax.jit(ssm.selective_ssm, static_argnames=("selective", "backend", "n_heads", "content",
                                                    "return_weights"))
_kernel = jax.jit(ssm.implicit_kernel, static_argnames=("selective", "content"))


def _inputs(leading=(2,), seed=0, t=T, c=C, dt_rank=None):
  key_params, key_x = jax.random.split(jax.random.key(seed))
  params = ssm.init_ssm_params(key_params, c, N, dt_rank=dt_rank)
  # Larger steps than the Mamba init so that the decay and the brake visibly matter over T tokens.
  params["delta_bias"] = params["delta_bias"] + 2.0
  return jax.random.normal(key_x, leading + (t, c)), params


def _loss(x, params, brake, backend="scan", selective=True, content=True):
  y, routing = _ssm(x, params, brake=brake, backend=backend, selective=selective, content=content,
                    n_heads=2)
  routing_terms = (jnp.sum(routing.weights[..., -1, :] ** 2) + jnp.sum(routing.key_norms)
                   + jnp.sum(jnp.log(routing.row_mass)))
  return jnp.sum(jnp.sin(y)) + routing_terms


_loss_grads = jax.jit(jax.grad(_loss, argnums=(0, 1, 2)),
                      static_argnames=("backend", "selective", "content"))


def _numpy_recurrence(a, b):
  """`h_t = a_t h_{t-1} + b_t` along axis 0 by a Python loop."""
  out, state = [], np.zeros_like(b[0])
  for a_step, b_step in zip(a, b):
    state = a_step * state + b_step
    out.append(state)
  return np.stack(out)


def _loop_selective_scan(delta, x, b, c, a, beta):
  """The S6 recurrence by a plain loop of jnp ops (JAX autodiff gives its reference gradients)."""
  h, ys = jnp.zeros(delta.shape[1:] + a.shape[-1:]), []
  for t in range(delta.shape[0]):
    h = (jnp.exp(delta[t][..., None] * a - beta) * h
         + (delta[t] * x[t])[..., None] * b[t][..., None, :])
    ys.append(jnp.sum(c[t][..., None, :] * h, -1))
  return jnp.stack(ys)


def _head_magnitudes_reference(kernel_TxTxC, n_heads):
  """`[..., T, T, C] -> [..., H, T, T]`: `sum_{c in h} |K[t, s, c]|`."""
  k = np.abs(np.asarray(kernel_TxTxC))
  k = k.reshape(k.shape[:-1] + (n_heads, k.shape[-1] // n_heads)).sum(-1)
  return np.moveaxis(k, -1, -3)


class LinearRecurrenceTest(parameterized.TestCase):

  @parameterized.product(backend=scan.BACKENDS, axis=(0, -2, 1))
  def test_matches_python_loop(self, backend, axis):
    a = jax.random.uniform(jax.random.key(0), (5, 6, 2))
    b = jax.random.normal(jax.random.key(1), (5, 6, 2))
    h = scan.linear_recurrence(a, b, axis=axis, backend=backend)
    a_t, b_t = np.moveaxis(np.asarray(a), axis, 0), np.moveaxis(np.asarray(b), axis, 0)
    expected = np.moveaxis(_numpy_recurrence(a_t, b_t), 0, axis)
    chex.assert_trees_all_close(h, expected, rtol=1e-5, atol=1e-6)
    self.assertEqual(h.dtype, jnp.float32)

  @parameterized.parameters(*scan.BACKENDS)
  def test_gradients_match_autodiff_of_a_loop(self, backend):
    a = jax.random.uniform(jax.random.key(0), (7, 3))
    b = jax.random.normal(jax.random.key(1), (7, 3))
    w = jax.random.normal(jax.random.key(2), (7, 3))

    def loop(a, b):
      h, out = jnp.zeros(3), []
      for t in range(7):
        h = a[t] * h + b[t]
        out.append(h)
      return jnp.stack(out)

    got = jax.grad(lambda a, b: jnp.sum(w * jnp.cos(
        scan.linear_recurrence(a, b, backend=backend))), argnums=(0, 1))(a, b)
    expected = jax.grad(lambda a, b: jnp.sum(w * jnp.cos(loop(a, b))), argnums=(0, 1))(a, b)
    chex.assert_trees_all_close(got, expected, rtol=1e-5, atol=1e-6)

  def test_bad_inputs_raise(self):
    with self.assertRaisesRegex(ValueError, "backend"):
      scan.linear_recurrence(jnp.ones(3), jnp.ones(3), backend="fft")
    with self.assertRaisesRegex(ValueError, "same shape"):
      scan.linear_recurrence(jnp.ones(3), jnp.ones(4))
    with self.assertRaisesRegex(ValueError, "axis"):
      scan.linear_recurrence(jnp.ones(3), jnp.ones(3), axis=1)


class SelectiveScanTest(parameterized.TestCase):
  """The fused S6 scan (hand-written adjoint) against autodiff of a plain loop."""

  # the fused adjoint recomputes states in blocks of ceil(sqrt(T)) steps: T = 9 fills 3 blocks of
  # 3, T = 10 pads the last of 3 blocks of 4, T = 1 is one block of one step
  @parameterized.parameters(("scan", 9), ("scan", 10), ("scan", 1), ("associative", 9))
  def test_values_and_gradients_match_a_loop(self, backend, t):
    b, c, n = 2, 3, 2
    keys = jax.random.split(jax.random.key(3), 7)
    args = (jax.nn.softplus(jax.random.normal(keys[0], (t, b, c))),
            jax.random.normal(keys[1], (t, b, c)), jax.random.normal(keys[2], (t, b, n)),
            jax.random.normal(keys[3], (t, b, n)), -jnp.exp(jax.random.normal(keys[4], (c, n))),
            jnp.float32(0.3))
    w = jax.random.normal(keys[5], (t, b, c))
    value_and_grad = lambda f: jax.jit(jax.value_and_grad(
        lambda *z: jnp.sum(w * jnp.cos(f(*z))), argnums=tuple(range(6))))
    fused = lambda *z: scan.selective_scan(*z, backend=backend)
    chex.assert_trees_all_close(jax.jit(fused)(*args), _loop_selective_scan(*args),
                                rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(value_and_grad(fused)(*args),
                                value_and_grad(_loop_selective_scan)(*args), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
class SelectiveSSMTest(parameterized.TestCase):

  @parameterized.parameters(((), 1), ((2, 3), 2), ((2,), 4))
  def test_shapes(self, leading, n_heads):
    x, params = _inputs(leading)
    y, routing = _ssm(x, params, brake=0.1, n_heads=n_heads)
    chex.assert_shape(y, leading + (T, C))
    chex.assert_shape(routing.weights, leading + (n_heads, T, T))
    chex.assert_shape(routing.mask, (T, T))
    chex.assert_shape(routing.key_norms, leading + (n_heads, T))
    chex.assert_shape(routing.row_mass, leading + (n_heads, T))
    self.assertEqual(routing.mask.dtype, jnp.bool_)

  def test_output_dtype_follows_x(self):
    x, params = _inputs()
    y, routing = _ssm(x.astype(jnp.bfloat16), params)
    self.assertEqual(y.dtype, jnp.bfloat16)
    self.assertEqual(routing.weights.dtype, jnp.float32)

  @parameterized.product(selective=(True, False), content=(True, False))
  def test_causal_rows_sum_to_one(self, selective, content):
    x, params = _inputs()
    _, routing = _ssm(x, params, brake=0.2, selective=selective, content=content, n_heads=2)
    np.testing.assert_array_equal(routing.mask, np.tril(np.ones((T, T), bool)))
    np.testing.assert_array_equal(jnp.where(routing.full_mask(), 0.0, routing.weights), 0.0)
    self.assertTrue(np.all(routing.weights >= 0))
    chex.assert_trees_all_close(routing.weights.sum(-1), jnp.ones((2, 2, T)), atol=1e-6)

  def test_zero_brake_is_default(self):
    x, params = _inputs()
    chex.assert_trees_all_equal(_ssm(x, params, brake=0.0), _ssm(x, params))

  @parameterized.parameters(True, False)
  def test_brake_never_raises_farthest_mass(self, selective):
    x, params = _inputs()
    farthest = jax.vmap(
        lambda b: _ssm(x, params, brake=b, selective=selective)[1].weights[..., -1, 0]
    )(jnp.array(BRAKES))
    self.assertTrue(np.all(np.diff(farthest, axis=0) <= 1e-7), farthest)
    self.assertLess(float(farthest[-1].max()), float(farthest[0].min()))

  def test_jit_equals_eager(self):
    x, params = _inputs()
    chex.assert_trees_all_close(_ssm(x, params, brake=0.3),
                                ssm.selective_ssm(x, params, brake=0.3), rtol=1e-5, atol=1e-6)

  def test_vmap_over_all_arguments_equals_loop(self):
    xs, params = zip(*(_inputs(seed=seed) for seed in range(3)))
    brakes = jnp.array([0.0, 0.4, 1.5])
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *params)
    batched = jax.vmap(lambda x, p, b: _ssm(x, p, brake=b))(jnp.stack(xs), stacked, brakes)
    for i in range(3):
      chex.assert_trees_all_close(jax.tree.map(lambda a: a[i], batched),
                                  _ssm(xs[i], params[i], brake=brakes[i]), rtol=1e-5, atol=1e-6)

  def test_gradients_finite(self):
    x, params = _inputs()
    grads = _loss_grads(x, params, 0.5)
    chex.assert_tree_all_finite(grads)
    self.assertGreater(float(jnp.abs(grads[2])), 0.0)

  @parameterized.parameters((True, True), (False, False))
  def test_backends_agree(self, selective, content):
    x, params = _inputs()
    values = {b: _ssm(x, params, brake=0.3, backend=b, selective=selective, content=content)
              for b in scan.BACKENDS}
    grads = {b: _loss_grads(x, params, 0.3, backend=b, selective=selective, content=content)
             for b in scan.BACKENDS}
    for backend in scan.BACKENDS[1:]:
      chex.assert_trees_all_close(values[backend], values["scan"], rtol=1e-5, atol=1e-6)
      chex.assert_trees_all_close(grads[backend], grads["scan"], rtol=1e-5, atol=1e-5)

  def test_frozen_is_linear_selective_is_not(self):
    x, params = _inputs()
    x1, x2 = x[0], x[1]
    for selective, linear in ((False, True), (True, False)):
      f = lambda x: _ssm(x, params, brake=0.2, selective=selective, return_weights=False)[0]
      mixed, combined = f(2.0 * x1 - 3.0 * x2), 2.0 * f(x1) - 3.0 * f(x2)
      self.assertEqual(bool(np.allclose(mixed, combined, rtol=1e-4, atol=1e-4)), linear)

  @parameterized.parameters((True, True, 0.0, 1), (True, True, 0.7, 2), (False, True, 0.7, 4),
                            (True, False, 0.4, 2), (False, False, 0.0, 1))
  def test_implicit_kernel_reproduces_output_and_routing(self, selective, content, brake, n_heads):
    x, params = _inputs()
    y, routing = _ssm(x, params, brake=brake, selective=selective, content=content,
                      n_heads=n_heads)
    kernel = _kernel(x, params, brake=brake, selective=selective, content=content)
    chex.assert_shape(kernel, (2, T, T, C))
    np.testing.assert_array_equal(jnp.where(routing.mask[..., None], 0.0, kernel), 0.0)
    y_kernel = jnp.einsum("...tsc,...sc->...tc", kernel, x) + params["d"] * x
    chex.assert_trees_all_close(y_kernel, y, rtol=1e-4, atol=1e-5)
    magnitudes = _head_magnitudes_reference(kernel, n_heads)
    chex.assert_trees_all_close(routing.row_mass, magnitudes.sum(-1), rtol=1e-5, atol=1e-7)
    chex.assert_trees_all_close(routing.weights, magnitudes / magnitudes.sum(-1, keepdims=True),
                                rtol=1e-5, atol=1e-7)

  @parameterized.parameters((0.0, 1), (0.05, 4), (1.0, 2))
  def test_routing_equals_explicit_kernel_on_longer_sequences(self, brake, n_heads):
    # Random (not Mamba-init) decays over 24 steps: products of many factors near 0 and 1.
    x, params = _inputs(leading=(3,), t=24, c=8, seed=5)
    params["a_log"] = jax.random.normal(jax.random.key(9), params["a_log"].shape)
    _, routing = _ssm(x, params, brake=brake, n_heads=n_heads)
    magnitudes = _head_magnitudes_reference(_kernel(x, params, brake=brake), n_heads)
    chex.assert_trees_all_close(routing.weights, magnitudes / magnitudes.sum(-1, keepdims=True),
                                rtol=1e-5, atol=1e-6)

  def test_routing_never_builds_the_tokens_by_tokens_by_channels_by_state_tensor(self):
    b, t, c, n = 2, 64, 32, 16
    x = jax.ShapeDtypeStruct((b, t, c), jnp.float32)
    params = jax.eval_shape(lambda: ssm.init_ssm_params(jax.random.key(0), c, n, dt_rank=2))
    routing = lambda x, p: ssm.selective_ssm(x, p, brake=0.1, n_heads=4)[1]
    temp = jax.jit(routing).lower(x, params).compile().memory_analysis().temp_size_in_bytes
    self.assertLess(temp, b * t * t * c * n * 4 / 8)  # the explicit kernel is 16 MiB here

  def test_key_norms_are_write_norms_per_head(self):
    x, params = _inputs()
    _, routing = _ssm(x, params, brake=0.1, n_heads=2)
    delta = jax.nn.softplus(x @ params["delta_proj"] + params["delta_bias"])
    b_norm = np.linalg.norm(np.asarray(x @ params["b_proj"]), axis=-1)
    for h in range(2):
      write = np.asarray(delta[..., 2 * h:2 * h + 2])[..., :, None] * np.asarray(
          x @ params["b_proj"])[..., None, :]
      frobenius = np.sqrt(np.sum(write**2, axis=(-2, -1)))
      np.testing.assert_allclose(routing.key_norms[:, h], frobenius, rtol=1e-5)
      np.testing.assert_allclose(
          routing.key_norms[:, h], np.linalg.norm(delta[..., 2 * h:2 * h + 2], axis=-1) * b_norm,
          rtol=1e-5)

  def test_return_weights_false(self):
    x, params = _inputs()
    y, routing = _ssm(x, params, brake=0.3, return_weights=False)
    self.assertIsNone(routing)
    chex.assert_trees_all_close(y, _ssm(x, params, brake=0.3)[0])

  def test_low_rank_delta_equals_full_rank_with_the_product(self):
    x, params = _inputs(dt_rank=2)
    self.assertNotIn("delta_proj", params)
    chex.assert_shape((params["delta_down"], params["delta_up"]), ((C, 2), (2, C)))
    full = {k: v for k, v in params.items() if k not in ("delta_down", "delta_up")}
    full["delta_proj"] = params["delta_down"] @ params["delta_up"]
    chex.assert_trees_all_close(_ssm(x, params, brake=0.2), _ssm(x, full, brake=0.2),
                                rtol=1e-5, atol=1e-6)

  @parameterized.parameters(None, 3)
  def test_init_params(self, dt_rank):
    params = ssm.init_ssm_params(jax.random.key(0), 64, N, dt_rank=dt_rank)
    np.testing.assert_allclose(-jnp.exp(params["a_log"]), -np.tile(np.arange(1.0, N + 1), (64, 1)),
                               rtol=1e-6)
    dt = jax.nn.softplus(params["delta_bias"])
    self.assertTrue(np.all((dt >= 1e-3 * 0.999) & (dt <= 1e-1 * 1.001)), dt)
    np.testing.assert_array_equal(params["d"], 1.0)
    self.assertLessEqual(float(jnp.abs(params["b_proj"]).max()), 64**-0.5)
    if dt_rank:
      self.assertLessEqual(float(jnp.abs(params["delta_up"]).max()), dt_rank**-0.5)
      self.assertGreater(float(jnp.abs(params["delta_up"]).max()), 0.5 * dt_rank**-0.5)

  def test_bad_inputs_raise(self):
    x, params = _inputs()
    with self.assertRaisesRegex(ValueError, "brake"):
      ssm.selective_ssm(x, params, brake=-0.1)
    with self.assertRaisesRegex(ValueError, "backend"):
      ssm.selective_ssm(x, params, backend="cuda")
    with self.assertRaisesRegex(ValueError, "params\\['a_log'\\]"):
      ssm.selective_ssm(x[..., :3], params)
    with self.assertRaisesRegex(ValueError, "b_static"):
      ssm.selective_ssm(x, {k: v for k, v in params.items() if k != "b_static"}, selective=False)
    with self.assertRaisesRegex(ValueError, "delta_down"):
      ssm.selective_ssm(x, {k: v for k, v in params.items() if k != "delta_proj"})
    with self.assertRaisesRegex(ValueError, "x must be"):
      ssm.selective_ssm(x[0, 0], params)
    with self.assertRaisesRegex(ValueError, "n_heads"):
      ssm.selective_ssm(x, params, n_heads=3)
    with self.assertRaisesRegex(ValueError, "dt_rank"):
      ssm.init_ssm_params(jax.random.key(0), C, N, dt_rank=0)


class PositionalPriorTest(parameterized.TestCase):
  """`content=False`: delta, B, C replaced by their sequence means (the SSM's positional prior)."""

  def test_matches_a_numpy_toeplitz_kernel_from_the_sequence_means(self):
    x, params = _inputs(leading=(), seed=2)
    brake = 0.3
    y, routing = _ssm(x, params, brake=brake, content=False, n_heads=2)
    xn, p = np.asarray(x, np.float64), {k: np.asarray(v, np.float64) for k, v in params.items()}
    delta = np.log1p(np.exp(xn @ p["delta_proj"] + p["delta_bias"])).mean(0)        # [C]
    b, c = (xn @ p["b_proj"]).mean(0), (xn @ p["c_proj"]).mean(0)                    # [N]
    a = -np.exp(p["a_log"])                                                          # [C, N]
    kernel = np.zeros((T, T, C))
    for t in range(T):
      for s in range(t + 1):
        kernel[t, s] = np.sum(c * np.exp((t - s) * (delta[:, None] * a - brake)) * delta[:, None]
                              * b, axis=-1)
    np.testing.assert_allclose(y, np.einsum("tsc,sc->tc", kernel, xn) + p["d"] * xn,
                               rtol=1e-4, atol=1e-5)
    magnitudes = _head_magnitudes_reference(kernel, 2)
    np.testing.assert_allclose(routing.row_mass, magnitudes.sum(-1), rtol=1e-5)
    np.testing.assert_allclose(routing.weights, magnitudes / magnitudes.sum(-1, keepdims=True),
                               rtol=1e-5, atol=1e-7)

  @parameterized.parameters(True, False)
  def test_ignores_the_order_of_the_input(self, selective):
    x, params = _inputs()
    permuted = x[:, np.random.default_rng(0).permutation(T)]
    _, routing = _ssm(x, params, brake=0.2, content=False, selective=selective, n_heads=2)
    _, routing_permuted = _ssm(permuted, params, brake=0.2, content=False, selective=selective,
                               n_heads=2)
    chex.assert_trees_all_close(routing_permuted, routing, rtol=1e-5, atol=1e-6)
    _, content_routing = _ssm(x, params, brake=0.2, n_heads=2)
    _, content_permuted = _ssm(permuted, params, brake=0.2, n_heads=2)
    self.assertFalse(np.allclose(content_routing.weights, content_permuted.weights, atol=1e-3))

  @parameterized.parameters(0.1, 0.5, 2.0)
  def test_brake_multiplies_the_prior_by_exp_minus_beta_lag(self, brake):
    x, params = _inputs()
    _, free = _ssm(x, params, brake=0.0, content=False, n_heads=2)
    _, braked = _ssm(x, params, brake=brake, content=False, n_heads=2)
    lag = np.maximum(np.arange(T)[:, None] - np.arange(T)[None, :], 0)
    expected = np.asarray(free.weights) * np.exp(-brake * lag) * np.tril(np.ones((T, T)))
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(braked.weights, expected, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(braked.row_mass, (np.asarray(free.weights * free.row_mass[..., None])
                                                 * np.exp(-brake * lag)).sum(-1), rtol=1e-4)

  def test_prior_router_is_trainable(self):
    x, params = _inputs()
    grads = _loss_grads(x, params, 0.3, content=False)
    chex.assert_tree_all_finite(grads)
    for name in ("delta_proj", "b_proj", "c_proj", "a_log"):
      self.assertGreater(float(jnp.abs(grads[1][name]).max()), 0.0, name)


# ---- the Mamba mixer ----------------------------------------------------------------------------

WIDTH = 8
_x_mixer = jax.random.normal(jax.random.key(7), (2, 6, WIDTH))


def _mixer(**overrides):
  fields = dict(state_size=3, expand=2, n_heads=2, conv_width=3, dt_rank=0, gate=True)
  fields.update(overrides)
  return mixers.SSMMixer(**fields)


def _mixer_reference(mixer, variables, x, brake):
  """The Mamba block by hand from its parameters: in-proj, causal depthwise conv, SiLU, SSM, gate,
  out-proj."""
  p = variables["params"]
  xz = x @ p["in"]["kernel"]
  inner = mixer.expand * x.shape[-1]
  u, z = (xz[..., :inner], xz[..., inner:]) if mixer.gate else (xz, None)
  if mixer.conv_width:
    w, t = mixer.conv_width, x.shape[1]
    conv = np.tile(np.asarray(p["conv_bias"]), (x.shape[0], t, 1))
    for step in range(t):
      for k in range(w):
        source = step - (w - 1) + k
        if source >= 0:
          conv[:, step] += np.asarray(p["conv_kernel"][k]) * np.asarray(u[:, source])
    u = conv
  u = jax.nn.silu(u)
  y, _ = ssm.selective_ssm(u, p["ssm"], brake=brake, n_heads=mixer.n_heads)
  if mixer.gate:
    y = y * jax.nn.silu(z)
  return y @ p["out"]["kernel"]


@pytest.mark.slow
class SSMMixerTest(parameterized.TestCase):

  @parameterized.parameters(dict(), dict(conv_width=0), dict(gate=False), dict(dt_rank=3),
                            dict(conv_width=1, gate=False, n_heads=4))
  def test_matches_the_block_by_hand(self, **overrides):
    mixer = _mixer(**overrides)
    variables = mixer.init(jax.random.key(0), _x_mixer, 0.0)
    y, routing, prior = jax.jit(mixer.apply)(variables, _x_mixer, 0.4)
    self.assertIsNone(routing)
    self.assertIsNone(prior)
    chex.assert_trees_all_close(y, _mixer_reference(mixer, variables, _x_mixer, 0.4),
                                rtol=1e-5, atol=1e-6)

  @parameterized.parameters(dict(conv_width=0, gate=False, dt_rank=0, rank=1, in_columns=16),
                            dict(conv_width=4, gate=True, dt_rank=5, rank=5, in_columns=32))
  def test_switches_set_the_parameters(self, conv_width, gate, dt_rank, rank, in_columns):
    variables = _mixer(conv_width=conv_width, gate=gate, dt_rank=dt_rank).init(
        jax.random.key(0), _x_mixer, 0.0)
    p = variables["params"]
    chex.assert_shape(p["in"]["kernel"], (WIDTH, in_columns))
    self.assertEqual("conv_kernel" in p, bool(conv_width))
    chex.assert_shape(p["ssm"]["delta_down"], (2 * WIDTH, rank))  # rank 0 -> ceil(8 / 16) = 1
    if conv_width:
      chex.assert_shape((p["conv_kernel"], p["conv_bias"]), ((conv_width, 2 * WIDTH), (2 * WIDTH,)))
      self.assertLessEqual(float(jnp.abs(p["conv_kernel"]).max()), conv_width**-0.5)
    self.assertEqual(math.ceil(WIDTH / 16), 1)

  def test_block_is_causal(self):
    mixer = _mixer(conv_width=4)
    variables = mixer.init(jax.random.key(0), _x_mixer, 0.0)
    apply = jax.jit(lambda x: mixer.apply(variables, x, 0.1)[0])
    changed = _x_mixer.at[:, 3].add(1.0)
    y, y_changed = apply(_x_mixer), apply(changed)
    np.testing.assert_array_equal(y_changed[:, :3], y[:, :3])
    self.assertFalse(np.allclose(y_changed[:, 3:], y[:, 3:]))

  def test_routing_heads_and_prior(self):
    mixer = _mixer(n_heads=4)
    variables = mixer.init(jax.random.key(0), _x_mixer, 0.0)
    _, routing, prior = mixer.apply(variables, _x_mixer, 0.3, with_routing=True)
    chex.assert_shape((routing.weights, prior.weights), ((2, 4, 6, 6),) * 2)
    self.assertFalse(np.allclose(routing.weights, prior.weights, atol=1e-3))
    # The prior is the content-free router on the same SSM input: the content=False mixer with the
    # same parameters routes exactly like it, and its prior is its routing.
    prior_mixer = _mixer(n_heads=4, content=False)
    _, prior_routing, its_prior = prior_mixer.apply(variables, _x_mixer, 0.3, with_routing=True)
    chex.assert_trees_all_close(prior_routing, prior, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_equal(its_prior, prior_routing)

  def test_bad_heads_raise(self):
    with self.assertRaisesRegex(ValueError, "model.n_heads"):
      _mixer(n_heads=3).init(jax.random.key(0), _x_mixer, 0.0)

  def test_make_mixer_reads_the_config(self):
    from rc_jax.engine import config_lib  # pylint: disable=g-import-not-at-top
    model = config_lib.base_config("ssm", "tiny").model
    model.update(conv_width=2, dt_rank=3, gate=False, content=False)
    mixer = mixers.make_mixer("ssm", model)
    self.assertEqual((mixer.n_heads, mixer.conv_width, mixer.dt_rank, mixer.gate, mixer.content,
                      mixer.state_size, mixer.backend),
                     (model.n_heads, 2, 3, False, False, model.state_size, model.ssm_backend))


if __name__ == "__main__":
  absltest.main()
