"""The sweeps behind the report: each one `configs/<file>.py:<preset>,<variants>`.

Every trained sweep of claim 1 has a twin with the variant `prior` (the same architecture, data,
seeds and steps with its router's content score removed: the positional-prior null model). Controls
(claims 3-6) vary one switch of a family's default sweep. The claims compare at brake 0, so twins
and controls train only there (variant `brake0`); the brake sweep itself is the trained sweeps'
grid.
"""

from __future__ import annotations

import importlib.util
import os
from typing import NamedTuple

from rc_jax.engine import config_lib

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir,
                          "configs")
FAMILIES = ("attention", "graph", "ssm", "rwkv", "depth")
# sequence families are trained on a task where a no-op helps (bigram-backcopy: heads are dormant
# except after triggers) and one where it does not (associative recall: every query must retrieve)
TASKS = {"attention": ("", "recall"), "ssm": ("", "recall"), "rwkv": ("", "recall"),
         "depth": ("", "recall"), "graph": ("",)}
CONTROLS = (("attention", "cosine"), ("attention", "sigmoid"), ("attention", "distance"),
            ("ssm", "frozen"), ("ssm", "noescape"), ("rwkv", "noescape"), ("graph", "distance"))


class Sweep(NamedTuple):
  """One sweep of the suite: `configs/<family>.py:<preset>,<variants>` into `<workdir>/<name>`."""

  family: str
  variants: tuple[str, ...]

  @property
  def name(self) -> str:
    return "-".join((self.family,) + self.variants)

  def arg(self, preset: str) -> str:
    return ",".join((preset,) + self.variants)

  def config(self, preset: str):
    return load_config(self.family, self.arg(preset))

  def command(self, preset: str, workdir: str) -> str:
    return (f"python experiments/sweep.py --config=configs/{self.family}.py:{self.arg(preset)} "
            f"--workdir={os.path.join(workdir, self.name)}")

  def prior_twin(self) -> "Sweep":
    return Sweep(self.family, self.variants + ("prior", "brake0"))


def load_config(family: str, arg: str):
  """`get_config(arg)` of `configs/<family>.py`, validated."""
  path = os.path.normpath(os.path.join(CONFIG_DIR, f"{family}.py"))
  spec = importlib.util.spec_from_file_location(f"rc_jax_config_{family}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg)
  config_lib.validate(config)
  return config


def load_report_config(path: str | None = None):
  """`get_config()` of `configs/report.py` (or of the config file `path`): the report's statistic,
  nulls, margins and calibrated thresholds."""
  path = path or os.path.join(CONFIG_DIR, "report.py")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"report config {path} not found")
  spec = importlib.util.spec_from_file_location("rc_jax_report_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def trained_sweeps() -> list[Sweep]:
  """Claim 1's sweeps: every family on every task, default router."""
  return [Sweep(family, (task,) if task else ()) for family in FAMILIES for task in TASKS[family]]


def control_sweeps() -> list[Sweep]:
  return [Sweep(family, (variant, "brake0")) for family, variant in CONTROLS]


# A trained positive control at the scale where a BOS sink is documented to form (Guo et al. 2024's
# Bigram-Backcopy model and optimiser: `config_lib` variant "guo"), with its prior twin; too large
# for a CPU, so only in the accelerator presets.
POSITIVE_CONTROL_PRESETS = ("gpu", "paper")


POSITIVE_CONTROL = Sweep("attention", ("guo", "brake0"))


def positive_control_sweeps() -> list[Sweep]:
  """The trained positive control and its prior twin."""
  return [POSITIVE_CONTROL, Sweep("attention", ("guo", "prior", "brake0"))]


def all_sweeps(preset: str | None = None) -> list[Sweep]:
  """Everything the report runs: trained sweeps, their prior twins, the controls, and (accelerator
  presets) the trained positive control and its twin."""
  trained = trained_sweeps()
  extra = positive_control_sweeps() if preset in POSITIVE_CONTROL_PRESETS else []
  return trained + [sweep.prior_twin() for sweep in trained] + control_sweeps() + extra
