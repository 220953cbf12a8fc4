"""Graph-attention node classifier on a stochastic block model: hubs vs the hop brake.

    python experiments/sweep.py --config=configs/graph.py:cpu
    python experiments/sweep.py --config=configs/graph.py:cpu,distance

Variants (`config_lib.VARIANTS`): prior (-beta * hops only: the positional-prior null model),
distance (the norm-aware score).

The brake acts on hop counts (1 per edge), so it needs larger values than the token brake to bite:
the cpu grid spans 0 .. 5. Hubs form within tens of full-batch steps, so the cpu preset logs every
5 steps (an onset in the first 50 steps is resolved to 5 steps) over a shorter run.
"""

import numpy as np

from rc_jax.engine.config_lib import sweep_config


def _adjust(config, preset):
  n_nodes = {"tiny": 16, "cpu": 64, "gpu": 256, "paper": 512}[preset]
  config.task = dict(name="sbm", seed=0, n_nodes=n_nodes, n_classes=4, p_in=0.3, p_out=0.02,
                     feature_dim=16, feature_noise=2.0)
  config.model.max_hops = 3
  if preset == "cpu":
    config.train.update(steps=500, chunk_steps=100, log_every=5)
    config.sweep.brakes = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
  elif preset == "gpu":   # 4x the nodes, 8x the steps of cpu: 32x the node-steps
    config.train.update(steps=4000, chunk_steps=1000, log_every=20)
    config.sweep.brakes = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
  elif preset == "paper":
    config.train.update(steps=5000, chunk_steps=1000, log_every=10)
    config.sweep.brakes = (0.0,) + tuple(np.round(np.geomspace(0.01, 5.0, 15), 4))


def get_config(arg: str = "cpu"):
  return sweep_config("graph", arg, _adjust)
