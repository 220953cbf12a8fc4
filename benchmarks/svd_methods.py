"""Time and accuracy of `metrics.effective_rank` per singular-value method on `[512, 64, 64]`.

    python -m benchmarks.svd_methods [--batch=512 --size=64 --repeats=10]

Three float32 cases, each of `--batch` matrices: Gaussian; near rank 1 (an outer product plus 1e-4
Gaussian noise, where representation collapse is measured); a 6-decade spectrum (singular values
geometric from 1 to 1e-6 between random orthogonal bases). Error: the largest relative error
against `effective_rank` of a float64 NumPy SVD of the same matrices. Time: the mean of
`--repeats` jitted calls after one warm-up. Methods the backend lacks (Jacobi on CPU) print their
error instead of a row. Runs with `jax_enable_x64` on (for "gram64"); the inputs stay float32.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

from rc_jax.measurement import metrics  # pylint: disable=g-import-not-at-top,wrong-import-position


def cases(batch: int, size: int, seed: int = 0) -> dict[str, np.ndarray]:
  """`{name: float32 [batch, size, size]}`, the three cases of the module docstring."""
  rng = np.random.default_rng(seed)
  gaussian = rng.normal(size=(batch, size, size))
  outer = rng.normal(size=(batch, size, 1)) * rng.normal(size=(batch, 1, size))
  near_rank1 = outer + 1e-4 * rng.normal(size=(batch, size, size))
  u, _ = np.linalg.qr(rng.normal(size=(batch, size, size)))
  v, _ = np.linalg.qr(rng.normal(size=(batch, size, size)))
  spectrum = np.geomspace(1.0, 1e-6, size)
  six_decades = np.einsum("bij,j,bkj->bik", u, spectrum, v)
  return {name: x.astype(np.float32) for name, x in
          (("gaussian", gaussian), ("near rank 1", near_rank1), ("6 decades", six_decades))}


def reference_rank(x: np.ndarray) -> np.ndarray:
  """Effective rank `[batch]` from a float64 NumPy SVD."""
  s = np.linalg.svd(x.astype(np.float64), compute_uv=False)
  p = s / s.sum(-1, keepdims=True)
  return np.exp(-np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), -1))


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--batch", type=int, default=512)
  parser.add_argument("--size", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=10)
  args = parser.parse_args(argv)
  data = cases(args.batch, args.size)
  references = {name: reference_rank(x) for name, x in data.items()}
  print(f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}), jax {jax.__version__}; "
        f"effective_rank of [{args.batch}, {args.size}, {args.size}] float32")
  print("| method | ms per call | " + " | ".join(f"max rel err, {n}" for n in data) + " |")
  print("|---|---|" + "---|" * len(data))
  for method in metrics.RANK_METHODS:
    fn = jax.jit(lambda x, m=method: metrics.effective_rank(x, reduce=False, method=m))
    try:
      errors = [float(np.max(np.abs(np.asarray(fn(x)) - references[n]) / references[n]))
                for n, x in data.items()]
      x = jax.device_put(data["gaussian"])
      jax.block_until_ready(fn(x))
      t0 = time.perf_counter()
      for _ in range(args.repeats):
        jax.block_until_ready(fn(x))
      ms = (time.perf_counter() - t0) / args.repeats * 1e3
    except Exception as error:  # pylint: disable=broad-except
      print(f"| {method} | not available: {type(error).__name__}: {str(error).splitlines()[0]} |")
      continue
    print(f"| {method} | {ms:.2f} | " + " | ".join(f"{e:.1e}" for e in errors) + " |")


if __name__ == "__main__":
  main()
