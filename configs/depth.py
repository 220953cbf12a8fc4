"""AttnRes (learned residuals over depth) on bigram-backcopy: depth routing vs the layer brake.

    python experiments/sweep.py --config=configs/depth.py:cpu
    python experiments/sweep.py --config=configs/depth.py:cpu,recall

Variants (`config_lib.VARIANTS`): recall, prior (pseudo-queries at 0: the positional-prior null).

Every sublayer (token attention and MLP separately) reads a depth mixture of all earlier sublayer
outputs, so `depth` blocks give `2 depth` routed depth routers (sublayers 1 .. 2 depth - 1 and the
output router; sublayer 0 reads the embedding alone). The cpu preset has depth 4: 8 routers over
2 .. 9 sources. To stay at a few minutes on 2 cores with twice the blocks it trains 1000 steps on
batches of 8 (with batch 16, the embedding's depth sink crossed 1.5x uniform by step 100 for brakes
<= 0.2, by 200 at 0.5 and not by 500 at 1.0), logging every 25 steps.
"""

from rc_jax.engine.config_lib import sweep_config


def _adjust(config, preset):
  if preset == "cpu":
    config.model.depth = 4
    config.task.batch_size = 8
    config.train.update(steps=1000, chunk_steps=250, log_every=25)
  elif preset == "gpu":   # the cpu model on 32x its tokens (32 x 32 x 8000 against 8 x 32 x 1000)
    config.model.depth = 4
    config.task.batch_size = 32


def get_config(arg: str = "cpu"):
  return sweep_config("depth", arg, _adjust)
