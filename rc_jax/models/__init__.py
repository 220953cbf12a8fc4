"""Flax Linen models that own parameters and call the pure routers (brake = call argument).

May import: `rc_jax.routers`, `rc_jax.tasks`, Flax, JAX. A model returns `ModelOutput` (logits,
and per routed layer its `Routing`, positional prior, hidden and routed representations): the door
to the engine's trainer."""

from rc_jax.models.attnres import AttnResLM
from rc_jax.models.graph import GraphClassifier
from rc_jax.models.lm import RouterLM
from rc_jax.models.output import ModelOutput


def build_model(config, n_outputs: int):
  """The model for `config.router` with `n_outputs` vocabulary entries (or classes for "graph")."""
  if config.router == "graph":
    return GraphClassifier(n_classes=n_outputs, model_config=config.model)
  if config.router == "depth":
    return AttnResLM(vocab_size=n_outputs, model_config=config.model)
  if config.router in ("attention", "ssm", "rwkv"):
    return RouterLM(mixer_kind=config.router, vocab_size=n_outputs, model_config=config.model)
  raise ValueError(f"config.router={config.router!r}: no model for it")
