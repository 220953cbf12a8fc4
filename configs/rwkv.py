"""rwkv sweep; see rc_jax/config_lib.py for every key.

    python experiments/sweep.py --config=configs/rwkv.py:cpu
"""

from rc_jax.config_lib import base_config


def get_config(preset: str = "cpu"):
  return base_config("rwkv", preset or "cpu")
