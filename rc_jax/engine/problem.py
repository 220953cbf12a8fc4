"""A `Problem`: a model, its data and its loss, built from a config; what `train.py` trains.

The trainer sees only pure functions of `(params, brake, key)`, so it is the same for language
models over tokens and node classifiers over a graph.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from rc_jax import tasks
from rc_jax.models import build_model
from rc_jax.models.output import ModelOutput

ROUTERS = ("attention", "graph", "ssm", "rwkv", "depth")


class Problem(NamedTuple):
  """Pure functions defining what is trained.

  init_params(key) -> params
  loss(params, brake, key) -> scalar training loss on a fresh batch drawn from `key`
  probe(params, brake, shuffled=False) -> (ModelOutput with routings, priors, hidden and routed,
    probe_loss, probe_accuracy) on the fixed probe batch (the same for every run of a sweep); with
    `shuffled=True` (static) on the shuffled-input null of that batch (`shuffle_probe`).
  """

  init_params: Callable[[jax.Array], Any]
  loss: Callable[[Any, jax.Array, jax.Array], jax.Array]
  probe: Callable[[Any, jax.Array], tuple[ModelOutput, jax.Array, jax.Array]]


def _masked_cross_entropy(logits, labels, weights):
  """Mean cross-entropy and accuracy over entries with weight 1."""
  losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  total = jnp.maximum(jnp.sum(weights), 1.0)
  return jnp.sum(losses * weights) / total, jnp.sum(correct * weights) / total


@jax.jit  # built once per sweep on the host: one program instead of a dozen eager ones
def shuffle_probe(inputs_BxT: jax.Array, key: jax.Array) -> jax.Array:
  """The token-shuffled null input: each sequence's tokens after BOS in a random order.

  Keeps the tokens (their frequencies) and BOS at position 0, destroys the order and with it every
  structure the task has; `inputs[:, 0]` stays BOS.
  """
  keys = jax.random.split(key, inputs_BxT.shape[0])
  shuffle = lambda row, k: jnp.concatenate([row[:1], jax.random.permutation(k, row[1:])])
  return jax.vmap(shuffle)(inputs_BxT, keys)


def _sequence_sampler(task_cfg, batch_size: int):
  if task_cfg.name == "text_file":
    return tasks.text_file_task(task_cfg.path, seq_len=task_cfg.seq_len, batch_size=batch_size), \
        tasks.TEXT_VOCAB_SIZE
  options = dict(task_cfg.options)
  sample = tasks.make_sequence_task(task_cfg.name, vocab_size=task_cfg.vocab_size,
                                    seq_len=task_cfg.seq_len, batch_size=batch_size,
                                    task_key=jax.random.key(task_cfg.seed), **options)
  return sample, task_cfg.vocab_size


def sequence_probe_batch(task_cfg):
  """The fixed probe batch of a sequence task (`task.probe_batch_size` sequences, drawn from the
  task seed): what every run of a sweep is measured on."""
  probe_sample, _ = _sequence_sampler(task_cfg, task_cfg.probe_batch_size)
  return jax.jit(probe_sample)(jax.random.fold_in(jax.random.key(task_cfg.seed), 1))


def _sequence_problem(config) -> Problem:
  task_cfg = config.task
  sample, vocab_size = _sequence_sampler(task_cfg, task_cfg.batch_size)
  probe_batch = sequence_probe_batch(task_cfg)
  shuffled_inputs = shuffle_probe(probe_batch.inputs,
                                  jax.random.fold_in(jax.random.key(task_cfg.seed), 2))
  model = build_model(config, vocab_size)
  dummy = probe_batch.inputs[:1]

  def init_params(key):
    return model.init(key, dummy, jnp.float32(0.0))

  def loss(params, brake, key):
    batch = sample(key)
    out = model.apply(params, batch.inputs, brake)
    return _masked_cross_entropy(out.logits, batch.targets, batch.loss_mask)[0]

  def probe(params, brake, shuffled: bool = False):
    inputs = shuffled_inputs if shuffled else probe_batch.inputs
    out = model.apply(params, inputs, brake, with_routing=True)
    probe_loss, accuracy = _masked_cross_entropy(out.logits, probe_batch.targets,
                                                 probe_batch.loss_mask)
    return out, probe_loss, accuracy

  return Problem(init_params, loss, probe)


def _graph_problem(config) -> Problem:
  task_cfg = config.task
  graph = tasks.stochastic_block_model(
      jax.random.key(task_cfg.seed), n_nodes=task_cfg.n_nodes, n_classes=task_cfg.n_classes,
      p_in=task_cfg.p_in, p_out=task_cfg.p_out, feature_dim=task_cfg.feature_dim,
      feature_noise=task_cfg.feature_noise)
  model = build_model(config, task_cfg.n_classes)
  train_weights = graph.train_mask.astype(jnp.float32)
  test_weights = graph.test_mask.astype(jnp.float32)
  # shuffled-input null: node features permuted across nodes (the graph and labels kept)
  shuffled_features = jax.random.permutation(
      jax.random.fold_in(jax.random.key(task_cfg.seed), 2), graph.features)

  def init_params(key):
    return model.init(key, graph.features, graph.hops, jnp.float32(0.0))

  def loss(params, brake, key):
    del key  # full-batch training on the one graph
    out = model.apply(params, graph.features, graph.hops, brake)
    return _masked_cross_entropy(out.logits, graph.labels, train_weights)[0]

  def probe(params, brake, shuffled: bool = False):
    features = shuffled_features if shuffled else graph.features
    out = model.apply(params, features, graph.hops, brake, with_routing=True)
    probe_loss, accuracy = _masked_cross_entropy(out.logits, graph.labels, test_weights)
    return out, probe_loss, accuracy

  return Problem(init_params, loss, probe)


def build_problem(config) -> Problem:
  """The `Problem` for `config.router` ("graph" trains a node classifier, the rest LMs)."""
  if config.router not in ROUTERS:
    raise ValueError(f"config.router={config.router!r} is not one of {ROUTERS}")
  return _graph_problem(config) if config.router == "graph" else _sequence_problem(config)
