"""Tests for rc_jax.routers.scan and rc_jax.routers.ssm (selective SSM router)."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from rc_jax.routers import scan
from rc_jax.routers import ssm

T, C, N = 8, 4, 3
BRAKES = (0.0, 0.05, 0.2, 1.0, 3.0)

_ssm = jax.jit(ssm.selective_ssm, static_argnames=("selective", "backend", "return_weights"))
_kernel = jax.jit(ssm.implicit_kernel, static_argnames=("selective",))


def _inputs(leading=(2,), seed=0):
  key_params, key_x = jax.random.split(jax.random.key(seed))
  params = ssm.init_ssm_params(key_params, C, N)
  # Larger steps than the Mamba init so that the decay and the brake visibly matter over T tokens.
  params["delta_bias"] = params["delta_bias"] + 2.0
  return jax.random.normal(key_x, leading + (T, C)), params


def _loss(x, params, brake, backend="scan", selective=True):
  y, routing = _ssm(x, params, brake=brake, backend=backend, selective=selective)
  routing_terms = jnp.sum(routing.weights[..., -1, :] ** 2) + jnp.sum(routing.key_norms)
  return jnp.sum(jnp.sin(y)) + routing_terms


_loss_grads = jax.jit(jax.grad(_loss, argnums=(0, 1, 2)), static_argnames=("backend", "selective"))


class LinearRecurrenceTest(parameterized.TestCase):

  @parameterized.parameters(("scan", 0), ("scan", -2), ("associative", 0), ("associative", 1))
  def test_matches_python_loop(self, backend, axis):
    a = jax.random.uniform(jax.random.key(0), (5, 6, 2))
    b = jax.random.normal(jax.random.key(1), (5, 6, 2))
    h = scan.linear_recurrence(a, b, axis=axis, backend=backend)
    a_t, b_t = np.moveaxis(np.asarray(a), axis, 0), np.moveaxis(np.asarray(b), axis, 0)
    expected, state = [], np.zeros_like(b_t[0])
    for a_step, b_step in zip(a_t, b_t):
      state = a_step * state + b_step
      expected.append(state)
    chex.assert_trees_all_close(h, np.moveaxis(np.stack(expected), 0, axis), rtol=1e-5, atol=1e-6)
    self.assertEqual(h.dtype, jnp.float32)

  def test_backends_agree_in_gradients(self):
    a = jax.random.uniform(jax.random.key(0), (7, 3))
    b = jax.random.normal(jax.random.key(1), (7, 3))

    def loss(a, b, backend):
      return jnp.sum(jnp.cos(scan.linear_recurrence(a, b, backend=backend)))

    grads = {backend: jax.grad(loss, argnums=(0, 1))(a, b, backend) for backend in scan.BACKENDS}
    chex.assert_trees_all_close(grads["scan"], grads["associative"], rtol=1e-5, atol=1e-6)

  def test_bad_inputs_raise(self):
    with self.assertRaisesRegex(ValueError, "backend"):
      scan.linear_recurrence(jnp.ones(3), jnp.ones(3), backend="fft")
    with self.assertRaisesRegex(ValueError, "same shape"):
      scan.linear_recurrence(jnp.ones(3), jnp.ones(4))
    with self.assertRaisesRegex(ValueError, "axis"):
      scan.linear_recurrence(jnp.ones(3), jnp.ones(3), axis=1)


class SelectiveSSMTest(parameterized.TestCase):

  @parameterized.parameters(((),), ((2, 3),))
  def test_shapes(self, leading):
    x, params = _inputs(leading)
    y, routing = _ssm(x, params, brake=0.1)
    chex.assert_shape(y, leading + (T, C))
    chex.assert_shape(routing.weights, leading + (T, T))
    chex.assert_shape(routing.mask, (T, T))
    chex.assert_shape(routing.key_norms, leading + (T,))
    self.assertEqual(routing.mask.dtype, jnp.bool_)

  def test_output_dtype_follows_x(self):
    x, params = _inputs()
    y, routing = _ssm(x.astype(jnp.bfloat16), params)
    self.assertEqual(y.dtype, jnp.bfloat16)
    self.assertEqual(routing.weights.dtype, jnp.float32)

  @parameterized.parameters(True, False)
  def test_causal_rows_sum_to_one(self, selective):
    x, params = _inputs()
    _, routing = _ssm(x, params, brake=0.2, selective=selective)
    np.testing.assert_array_equal(routing.mask, np.tril(np.ones((T, T), bool)))
    np.testing.assert_array_equal(jnp.where(routing.full_mask(), 0.0, routing.weights), 0.0)
    self.assertTrue(np.all(routing.weights >= 0))
    chex.assert_trees_all_close(routing.weights.sum(-1), jnp.ones((2, T)), atol=1e-6)

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

  @parameterized.parameters(True, False)
  def test_backends_agree(self, selective):
    x, params = _inputs()
    values = {b: _ssm(x, params, brake=0.3, backend=b, selective=selective) for b in scan.BACKENDS}
    chex.assert_trees_all_close(values["scan"], values["associative"], rtol=1e-5, atol=1e-6)
    grads = {b: _loss_grads(x, params, 0.3, backend=b, selective=selective) for b in scan.BACKENDS}
    chex.assert_trees_all_close(grads["scan"], grads["associative"], rtol=1e-5, atol=1e-5)

  def test_frozen_is_linear_selective_is_not(self):
    x, params = _inputs()
    x1, x2 = x[0], x[1]
    for selective, linear in ((False, True), (True, False)):
      f = lambda x: _ssm(x, params, brake=0.2, selective=selective, return_weights=False)[0]
      mixed, combined = f(2.0 * x1 - 3.0 * x2), 2.0 * f(x1) - 3.0 * f(x2)
      self.assertEqual(bool(np.allclose(mixed, combined, rtol=1e-4, atol=1e-4)), linear)

  @parameterized.parameters((True, 0.0), (True, 0.7), (False, 0.7))
  def test_implicit_kernel_reproduces_output(self, selective, brake):
    x, params = _inputs()
    y, routing = _ssm(x, params, brake=brake, selective=selective)
    kernel = _kernel(x, params, brake=brake, selective=selective)
    chex.assert_shape(kernel, (2, T, T, C))
    np.testing.assert_array_equal(jnp.where(routing.mask[..., None], 0.0, kernel), 0.0)
    y_kernel = jnp.einsum("...tsc,...sc->...tc", kernel, x) + params["d"] * x
    chex.assert_trees_all_close(y_kernel, y, rtol=1e-4, atol=1e-5)
    magnitudes = jnp.abs(kernel).sum(-1)
    chex.assert_trees_all_close(routing.weights, magnitudes / magnitudes.sum(-1, keepdims=True),
                                rtol=1e-5, atol=1e-7)

  def test_return_weights_false(self):
    x, params = _inputs()
    y, routing = _ssm(x, params, brake=0.3, return_weights=False)
    self.assertIsNone(routing)
    chex.assert_trees_all_close(y, _ssm(x, params, brake=0.3)[0])

  def test_init_params(self):
    params = ssm.init_ssm_params(jax.random.key(0), C, N)
    np.testing.assert_allclose(-jnp.exp(params["a_log"]), -np.tile(np.arange(1.0, N + 1), (C, 1)),
                               rtol=1e-6)
    dt = jax.nn.softplus(params["delta_bias"])
    self.assertTrue(np.all((dt >= 1e-3 * 0.999) & (dt <= 1e-1 * 1.001)), dt)
    np.testing.assert_array_equal(params["d"], 1.0)

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
    with self.assertRaisesRegex(ValueError, "x must be"):
      ssm.selective_ssm(x[0, 0], params)


if __name__ == "__main__":
  absltest.main()
