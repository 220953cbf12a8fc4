"""The reframing identity and its launcher."""

import os
import subprocess
import sys

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rc_jax import routers
from rc_jax.measurement import identity

_LAUNCHER = os.path.join(os.path.dirname(__file__), os.pardir, "experiments", "identity.py")


class IdentityTest(absltest.TestCase):

  def test_distance_logits_are_scaled_squared_distances(self):
    q, k = jax.random.normal(jax.random.key(0), (2, 5, 8))
    d = np.asarray(q)[:, None, :] - np.asarray(k)[None, :, :]
    expected = -np.sum(d * d, -1) / (2 * np.sqrt(8))
    np.testing.assert_allclose(routers.distance_logits(q, k), expected, rtol=1e-5, atol=1e-5)

  def test_identity_holds_with_the_norm_term_restored(self):
    q, k = jax.random.normal(jax.random.key(1), (2, 6, 8))
    k = k * jnp.linspace(0.2, 4.0, 6)[:, None]
    restored = routers.distance_logits(q, k) + jnp.sum(k * k, -1) / (2 * jnp.sqrt(8.0))
    np.testing.assert_allclose(jax.nn.softmax(restored), jax.nn.softmax(routers.dot_logits(q, k)),
                               atol=1e-6)

  def test_equal_norms_equal_weights_unequal_norms_do_not(self):
    dim = 16
    q = jax.random.normal(jax.random.key(2), (8, dim))
    equal = identity.keys_with_norms(jax.random.key(3), jnp.full((12,), 4.0), dim)
    stratified = identity.keys_with_norms(jax.random.key(3), 4.0 * identity.stratified_norms(12, 2.0),
                                          dim)
    self.assertLessEqual(float(identity.weight_gap(q, equal)), 1e-6)
    self.assertGreater(float(identity.weight_gap(q, stratified)), 0.1)

  @pytest.mark.slow
  def test_launcher_prints_both_gaps(self):
    result = subprocess.run([sys.executable, _LAUNCHER, "--dim=8"],
                            capture_output=True, text=True, check=True, timeout=120)
    lines = [l for l in result.stdout.splitlines() if "weight gap" in l]
    gaps = [float(l.rsplit("=", 1)[1]) for l in lines]
    self.assertLen(gaps, 2)
    self.assertLess(gaps[0], 1e-6)
    self.assertGreater(gaps[1], 0.1)


if __name__ == "__main__":
  absltest.main()
