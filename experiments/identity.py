"""Checks the reframing identity numerically: dot == distance routing iff key norms are equal.

    python experiments/identity.py [--dim=64] [--n_queries=16] [--n_keys=32] [--spread=2.0]
"""

from __future__ import annotations

from absl import app, flags
import jax
import jax.numpy as jnp

from rc_jax.measurement import identity

_DIM = flags.DEFINE_integer("dim", 64, "Feature dimension D.", lower_bound=1)
_N_QUERIES = flags.DEFINE_integer("n_queries", 16, "Number of queries.", lower_bound=1)
_N_KEYS = flags.DEFINE_integer("n_keys", 32, "Number of keys.", lower_bound=2)
_SPREAD = flags.DEFINE_float("spread", 2.0, "log(max/min) of the stratified key norms.", lower_bound=0)
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  q_key, k_key = jax.random.split(jax.random.key(_SEED.value))
  dim = _DIM.value
  q = jax.random.normal(q_key, (_N_QUERIES.value, dim))
  equal = identity.keys_with_norms(k_key, jnp.full((_N_KEYS.value,), jnp.sqrt(dim)), dim)
  stratified = identity.keys_with_norms(
      k_key, jnp.sqrt(dim) * identity.stratified_norms(_N_KEYS.value, _SPREAD.value), dim)
  print(f"softmax(q.k/sqrt(D)) vs softmax(-||q-k||^2/(2 sqrt D)), D={dim}, "
        f"{_N_QUERIES.value} queries x {_N_KEYS.value} keys")
  print(f"  equal key norms:                     max |weight gap| = "
        f"{float(identity.weight_gap(q, equal)):.2e}")
  print(f"  stratified key norms (log max/min={_SPREAD.value:g}): max |weight gap| = "
        f"{float(identity.weight_gap(q, stratified)):.2e}")


if __name__ == "__main__":
  app.run(main)
