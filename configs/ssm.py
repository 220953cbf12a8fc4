"""ssm sweep; see rc_jax/config_lib.py for every key.

    python experiments/sweep.py --config=configs/ssm.py:cpu
"""

from rc_jax.config_lib import base_config


def get_config(preset: str = "cpu"):
  return base_config("ssm", preset or "cpu")
