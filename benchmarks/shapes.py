"""The benchmark's workloads: attention-LM sweep configs by shape and run count, and their FLOPs."""

from __future__ import annotations

from rc_jax.engine import config_lib

# name -> overrides of the attention `cpu` preset (width 32, seq 32, batch 16, depth 2, 4 heads)
SHAPES = {
    "cpu": dict(width=32, seq_len=32),
    "w64": dict(width=64, seq_len=64),
    # the attention `paper` preset's model and batch
    "paper": dict(width=128, seq_len=128, depth=4, n_heads=8, vocab_size=256, batch_size=64),
}
_BRAKES = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)  # the cpu preset's


def grid(n_runs: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
  """Seeds x brakes with `n_runs` runs: 1 = 1x1, 4 = 2x2, 16 = 2x8, 64 = 8x8, 128 = 16x8."""
  n_seeds = 1 if n_runs < 4 else 2 if n_runs <= 16 else n_runs // 8
  n_brakes = n_runs // n_seeds
  if n_seeds * n_brakes != n_runs or n_brakes > len(_BRAKES):
    raise ValueError(f"--runs: {n_runs} is not 1, 2, 4, 2 x (<= 8) or a multiple of 8 up to 64")
  return tuple(range(n_seeds)), _BRAKES[:n_brakes]


def config_for(shape: str, n_runs: int, steps: int, *, log_every: int = 50,
               chunk_steps: int | None = None, mode: str = "auto", group: int = 8,
               svd_method: str = "svd"):
  """The attention cpu preset at `shape` with `n_runs` runs and `steps` steps (chunks of
  `chunk_steps`, default `log_every`, so the first chunk, timed with compilation, is short)."""
  if shape not in SHAPES:
    raise ValueError(f"--shapes: unknown shape {shape!r}; expected one of {tuple(SHAPES)}")
  config = config_lib.base_config("attention", "cpu")
  shape_cfg = SHAPES[shape]
  config.model.update(**{k: v for k, v in shape_cfg.items() if k in ("width", "depth", "n_heads")})
  config.task.update(**{k: v for k, v in shape_cfg.items()
                        if k in ("seq_len", "vocab_size", "batch_size")})
  config.train.update(steps=steps, chunk_steps=chunk_steps or log_every, log_every=log_every)
  seeds, brakes = grid(n_runs)
  config.sweep.update(seeds=seeds, brakes=brakes, learning_rates=(3e-3,))
  config.execution.update(mode=mode, chunk=group, svd_method=svd_method)
  config_lib.validate(config)
  return config


def train_flops_per_run_step(config) -> float:
  """Model FLOPs of one training step of one run, counted analytically (multiply-add = 2):
  3 x forward (backward = 2 x forward), forward = 2 x matmul parameters x tokens + attention's
  `q k^T` and `A v`, `2 x 2 T^2 D` per sequence and layer (the full `T x T` products are computed).
  Embedding lookups, norms, activations and the optimiser are not counted."""
  d, depth, ratio = config.model.width, config.model.depth, config.model.mlp_ratio
  t, b, v = config.task.seq_len, config.task.batch_size, config.task.vocab_size
  matmul_params = depth * (3 * d * d + d * d + 2 * ratio * d * d) + d * v
  forward = 2 * matmul_params * b * t + depth * b * 4 * t * t * d
  return 3.0 * forward
