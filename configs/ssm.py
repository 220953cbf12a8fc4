"""Selective SSM (Mamba S6) LM on bigram-backcopy; `--config.model.selective=False` is the
selectivity-freeze ablation (Delta, B, C no longer depend on the input).

    python experiments/sweep.py --config=configs/ssm.py:cpu
"""

from rc_jax.config_lib import base_config


def get_config(preset: str = "cpu"):
  preset = preset or "cpu"
  config = base_config("ssm", preset)
  if preset == "cpu":  # the sequential scan is ~4x slower per step than attention on 2 CPU cores
    config.model.expand = 1
    config.train.update(steps=1000, chunk_steps=250)
  return config
