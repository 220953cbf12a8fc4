"""Tests for rc_jax.routers.rwkv (RWKV-4-style WKV router)."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from rc_jax.routers import rwkv

T, C = 10, 4
BRAKES = (0.0, 0.05, 0.2, 1.0, 3.0)

_mixer = jax.jit(rwkv.rwkv_mixer)


def _inputs(leading=(2,), seed=0, key_scale=1.0):
  keys = jax.random.split(jax.random.key(seed), 5)
  r, k, v = (jax.random.normal(key, leading + (T, C)) for key in keys[:3])
  w = jnp.exp(jax.random.normal(keys[3], (C,)) - 1.0)
  u = jax.random.normal(keys[4], (C,))
  return r, key_scale * k, v, w, u


def _loss(r, k, v, w, u, brake):
  out, routing = _mixer(r, k, v, w, u, brake=brake)
  return jnp.sum(jnp.sin(out)) + jnp.sum(routing.weights[..., -1, :] ** 2)


_loss_grads = jax.jit(jax.grad(_loss, argnums=range(6)))


def _reference_wkv(k, v, w, u, brake):
  """The module docstring's formula, term by term in float64 (no stabilisation: moderate k only)."""
  k, v, w, u = (np.asarray(a, np.float64) for a in (k, v, w, u))
  wkv = np.zeros_like(v)
  for t in range(k.shape[-2]):
    num, den = np.exp(u + k[..., t, :]) * v[..., t, :], np.exp(u + k[..., t, :])
    for s in range(t):
      weight = np.exp(-(t - 1 - s) * w + k[..., s, :] - brake * (t - s))
      num, den = num + weight * v[..., s, :], den + weight
    wkv[..., t, :] = num / den
  return wkv


class RwkvMixerTest(parameterized.TestCase):

  @parameterized.parameters(((),), ((2, 3),))
  def test_shapes(self, leading):
    out, routing = _mixer(*_inputs(leading), brake=0.1)
    chex.assert_shape(out, leading + (T, C))
    chex.assert_shape(routing.weights, leading + (T, T))
    chex.assert_shape(routing.mask, (T, T))
    chex.assert_shape(routing.key_norms, leading + (T,))
    self.assertEqual(routing.mask.dtype, jnp.bool_)

  def test_causal_rows_sum_to_one_and_key_norms(self):
    r, k, v, w, u = _inputs()
    _, routing = _mixer(r, k, v, w, u, brake=0.2)
    np.testing.assert_array_equal(routing.mask, np.tril(np.ones((T, T), bool)))
    np.testing.assert_array_equal(jnp.where(routing.full_mask(), 0.0, routing.weights), 0.0)
    self.assertTrue(np.all(routing.weights >= 0))
    chex.assert_trees_all_close(routing.weights.sum(-1), jnp.ones((2, T)), atol=1e-6)
    chex.assert_trees_all_close(routing.key_norms, jnp.linalg.norm(k, axis=-1), rtol=1e-6)

  @parameterized.parameters(0.0, 0.6)
  def test_matches_reference_formula(self, brake):
    r, k, v, w, u = _inputs()
    out, _ = _mixer(r, k, v, w, u, brake=brake)
    expected = jax.nn.sigmoid(r) * _reference_wkv(k, v, w, u, brake)
    chex.assert_trees_all_close(out, expected.astype(np.float32), rtol=1e-5, atol=1e-6)

  @parameterized.parameters((0.0, 1.0), (0.7, 1.0), (0.7, 80.0))
  def test_recurrence_equals_kernel_form(self, brake, key_scale):
    r, k, v, w, u = _inputs(key_scale=key_scale)
    out, routing = _mixer(r, k, v, w, u, brake=brake)
    kernel = rwkv.wkv_kernel(k, w, u, brake=brake)
    chex.assert_shape(kernel, (2, C, T, T))
    chex.assert_trees_all_close(routing.weights, kernel.mean(-3), rtol=1e-6, atol=1e-7)
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
    chex.assert_trees_all_close(_mixer(*inputs, brake=0.3), rwkv.rwkv_mixer(*inputs, brake=0.3),
                                rtol=1e-5, atol=1e-6)

  def test_vmap_over_all_arguments_equals_loop(self):
    runs = [_inputs(seed=seed) for seed in range(3)]
    brakes = jnp.array([0.0, 0.4, 1.5])
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *runs)
    batched = jax.vmap(lambda inputs, b: _mixer(*inputs, brake=b))(stacked, brakes)
    for i in range(3):
      chex.assert_trees_all_close(jax.tree.map(lambda a: a[i], batched),
                                  _mixer(*runs[i], brake=brakes[i]), rtol=1e-5, atol=1e-6)

  @parameterized.parameters(1.0, 80.0)
  def test_gradients_finite(self, key_scale):
    r, k, v, w, u = _inputs(key_scale=key_scale)
    self.assertGreater(float(jnp.abs(k).max()), 80.0 if key_scale > 1 else 0.0)
    out, routing = _mixer(r, k, v, w, u, brake=0.5)
    chex.assert_tree_all_finite((out, routing))
    grads = _loss_grads(r, k, v, w, u, 0.5)
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


if __name__ == "__main__":
  absltest.main()
