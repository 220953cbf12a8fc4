"""AttnRes (learned residuals over depth) on bigram-backcopy: depth routing vs the layer brake.

    python experiments/sweep.py --config=configs/depth.py:cpu

Every sublayer (token attention and MLP separately) reads a depth mixture of all earlier sublayer
outputs, so `depth` blocks give `2 depth` routed depth routers (sublayers 1 .. 2 depth - 1 and the
output router; sublayer 0 reads the embedding alone). The cpu preset has depth 4: 8 routers over
2 .. 9 sources.
"""

from rc_jax.config_lib import base_config


def get_config(preset: str = "cpu"):
  preset = preset or "cpu"
  config = base_config("depth", preset)
  if preset == "cpu":
    config.model.depth = 4
  return config
