"""Graph-attention node classifier on a stochastic block model: hubs vs the hop brake.

    python experiments/sweep.py --config=configs/graph.py:cpu
"""

from rc_jax.config_lib import base_config


def get_config(preset: str = "cpu"):
  preset = preset or "cpu"
  config = base_config("graph", preset)
  n_nodes = {"tiny": 16, "cpu": 64, "paper": 512}[preset]
  config.task = dict(name="sbm", seed=0, n_nodes=n_nodes, n_classes=4, p_in=0.3, p_out=0.02,
                     feature_dim=16, feature_noise=2.0)
  config.model.max_hops = 3
  # node 0 is nothing special in a graph: the onset is hub formation (hubs: sources receiving over
  # 2x their uniform share), some layer averaging more than 2.5 hubs per head
  config.metrics.update(onset_metric="hub_count", onset_threshold=2.5)
  return config
