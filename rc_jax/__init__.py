"""rc_jax: routing collapse in JAX — routers, collapse metrics, vmapped sweeps, pretrained probes.

    from rc_jax import routers, metrics
    out, routing = routers.softmax_attention(q, k, v, brake=0.1)
    metrics.collapse_metrics(routing)

Packages by role, lowest first; a package imports only those above it in this list (see
ARCHITECTURE.md):

    routers      pure router functions -> (out, Routing)
    measurement  metrics, onsets, statistics over a Routing or its logs (metrics, onsets,
                 identity, stats)
    tasks        synthetic data generated in JAX (and a text-file reader)
    models       Flax modules that own parameters and call routers
    outputs      tables, figures, TensorBoard, comparison of finished sweeps
    engine       config schema, problem, train step, sweep, grid, memory plan, checkpoints,
                 distribution, compile cache, progress
    pretrained   local Hugging Face checkpoints as pure-JAX forwards with routing
    report       the paper's claims: suite, controls, calibration, verdicts, REPORT.md

The modules the README shows are importable from the top: `from rc_jax import routers, metrics,
sweep, train, config_lib, pretrained` (loaded on first use).
"""

import importlib

from rc_jax import routers
from rc_jax.measurement import metrics

__version__ = "0.1.0"

_SHORTCUTS = {"identity": "rc_jax.measurement.identity", "onsets": "rc_jax.measurement.onsets",
              "config_lib": "rc_jax.engine.config_lib", "train": "rc_jax.engine.train",
              "sweep": "rc_jax.engine.sweep"}


def __getattr__(name: str):
  """`rc_jax.sweep`, `rc_jax.train`, ...: the modules of `_SHORTCUTS`, imported on first use (the
  engine pulls in Orbax, which `import rc_jax` should not)."""
  if name in _SHORTCUTS:
    module = importlib.import_module(_SHORTCUTS[name])
    globals()[name] = module
    return module
  raise AttributeError(f"module 'rc_jax' has no attribute {name!r}")
