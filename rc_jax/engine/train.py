"""`make_train(config)`: a whole training run as pure functions of `(key, hparams)`.

    trainer = make_train(config)
    state, logs = trainer.train(key, {"brake": 0.1, "learning_rate": 3e-3})

`hparams` is a pytree of traced scalars, so `jax.vmap(trainer.train)` trains many (seed, brake,
learning rate) runs in one compiled program. The run is nested `lax.scan`s:

    train = init (+ measure at step 0)  ->  n_chunks x chunk
    chunk = blocks_per_chunk x block
    block = log_every x train_step  ->  measure

`measure` evaluates the collapse metrics on the fixed probe batch, per layer, as jitted reductions:
only `[n_layers]` scalars per metric leave the scan. `init` and `chunk` are also exposed so the
sweep can run chunk by chunk and checkpoint in between; chaining them gives exactly `train`.

Divergence is detected and isolated inside the step (so one run of a vmapped sweep cannot disturb
the others, and no `lax.cond` runs both branches under vmap): a run DIVERGES at step s when

  - its training loss at step s is not finite, or
  - its loss at step s exceeds its initial loss (the loss logged at step 0) by more than
    `train.divergence_nats` nats (a finite blow-up: the model puts on average less than
    exp(-divergence_nats) of its initial probability on the right tokens; default 10 nats, i.e.
    a factor exp(-10) = 4.5e-5; `inf` switches this test off), or
  - the update of step s makes a parameter non-finite (that update is not applied).

From then on the run is frozen: `jnp.where` keeps its parameters and optimiser state, the step
counter (shared by all runs' logs) still advances, `TrainState.diverged_at` holds s (-1 while
healthy), and every float log from the first logged step after s on is NaN (the sweep reports
those cells as empty). A run whose loss or parameters are non-finite at initialisation diverges
at step 0.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import optax

from rc_jax.measurement import metrics
from rc_jax.engine.config_lib import schedule_sizes
from rc_jax.engine.problem import build_problem

Logs = dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
  """step: int32 `[]`; params; opt_state (lr inside, via `optax.inject_hyperparams`); key_data:
  raw uint32 data of the batch-sampling key (raw so checkpoints can store it); diverged_at: int32
  `[]`, the step at which the run diverged, -1 while healthy; initial_loss: float32 `[]`, the
  loss logged at step 0 (the reference of the blow-up test)."""

  step: jax.Array
  params: Any
  opt_state: Any
  key_data: jax.Array
  diverged_at: jax.Array
  initial_loss: jax.Array


class Trainer(NamedTuple):
  init: Callable[[jax.Array, dict], tuple[TrainState, Logs]]
  chunk: Callable[[TrainState, dict], tuple[TrainState, Logs]]
  train: Callable[[jax.Array, dict], tuple[TrainState, Logs]]
  measure: Callable[..., Logs]   # (params, hparams, shuffled=False) -> per-layer metrics
  n_chunks: int
  logged_steps: tuple[int, ...]


def _adamw_clipped(learning_rate, b1, b2, weight_decay, grad_clip):
  return optax.chain(optax.clip_by_global_norm(grad_clip),
                     optax.adamw(learning_rate, b1=b1, b2=b2, weight_decay=weight_decay))


def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _blank_if(diverged: jax.Array, logs: Logs) -> Logs:
  """Float logs as NaN where `diverged` (so no aggregate, onset or figure reads them)."""
  return {name: jnp.where(diverged, jnp.nan, value)
          if jnp.issubdtype(value.dtype, jnp.floating) else value
          for name, value in logs.items()}


def _with_learning_rate(opt_state, learning_rate):
  hyperparams = dict(opt_state.hyperparams, learning_rate=jnp.asarray(learning_rate, jnp.float32))
  return opt_state._replace(hyperparams=hyperparams)


def make_train(config) -> Trainer:
  """Builds the pure training functions for `config` (see module docstring)."""
  problem = build_problem(config)
  train_cfg, metrics_cfg = config.train, config.metrics
  blocks_per_chunk, n_chunks = schedule_sizes(train_cfg)
  tx = optax.inject_hyperparams(_adamw_clipped, static_args=("grad_clip",))(
      learning_rate=1.0, b1=train_cfg.b1, b2=train_cfg.b2, weight_decay=train_cfg.weight_decay,
      grad_clip=train_cfg.grad_clip)

  def learning_rate_at(step, peak):
    if train_cfg.warmup_steps <= 0:
      return peak
    return peak * jnp.minimum(1.0, (step + 1) / train_cfg.warmup_steps)

  def measure(params, hparams, shuffled: bool = False) -> Logs:
    """Collapse metrics per routed layer on the probe batch (`shuffled`: on its shuffled null),
    each read against the router's content-free prior, plus the probe's loss and accuracy."""
    out, probe_loss, probe_accuracy = problem.probe(params, hparams["brake"], shuffled)
    per_layer = [metrics.collapse_metrics(routing, hidden, prior=prior, routed=routed,
                                          eps=metrics_cfg.sink_eps,
                                          hub_factor=metrics_cfg.hub_factor,
                                          rank_method=config.execution.svd_method)
                 for routing, prior, hidden, routed in zip(out.routings, out.priors, out.hidden,
                                                           out.routed)]
    logs = {name: jnp.stack([m[name] for m in per_layer]) for name in per_layer[0]}
    logs["probe_loss"] = probe_loss
    logs["probe_accuracy"] = probe_accuracy
    return logs

  def train_step(state: TrainState, hparams):
    key, batch_key = jax.random.split(jax.random.wrap_key_data(state.key_data))
    loss, grads = jax.value_and_grad(problem.loss)(state.params, hparams["brake"], batch_key)
    opt_state = _with_learning_rate(state.opt_state,
                                    learning_rate_at(state.step, hparams["learning_rate"]))
    updates, opt_state = tx.update(grads, opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    loss_ok = jnp.isfinite(loss) & ~(loss > state.initial_loss + train_cfg.divergence_nats)
    healthy = (state.diverged_at < 0) & loss_ok & _all_finite(params)
    keep = lambda new, old: jnp.where(healthy, new, old)  # frozen: no update, ever again
    diverged_at = jnp.where((state.diverged_at < 0) & ~healthy, state.step, state.diverged_at)
    return state.replace(step=state.step + 1, params=jax.tree.map(keep, params, state.params),
                         opt_state=jax.tree.map(keep, opt_state, state.opt_state),
                         key_data=jax.random.key_data(key), diverged_at=diverged_at), loss

  def block(state: TrainState, hparams):
    state, losses = jax.lax.scan(lambda s, _: train_step(s, hparams), state, None,
                                 length=train_cfg.log_every)
    logs = measure(state.params, hparams)
    logs["loss"] = jnp.mean(losses)
    logs = _blank_if(state.diverged_at >= 0, logs)
    logs["step"] = state.step
    return state, logs

  def init(key, hparams):
    params_key, data_key = jax.random.split(key)
    params = problem.init_params(params_key)
    opt_state = _with_learning_rate(tx.init(params), hparams["learning_rate"])
    logs = measure(params, hparams)
    logs["loss"] = problem.loss(params, hparams["brake"], jax.random.fold_in(data_key, 0))
    diverged = ~jnp.isfinite(logs["loss"]) | ~_all_finite(params)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state,
                       key_data=jax.random.key_data(data_key),
                       diverged_at=jnp.where(diverged, 0, -1).astype(jnp.int32),
                       initial_loss=logs["loss"].astype(jnp.float32))
    logs = _blank_if(diverged, logs)
    logs["step"] = state.step
    return state, logs

  def chunk(state, hparams):
    return jax.lax.scan(lambda s, _: block(s, hparams), state, None, length=blocks_per_chunk)

  def train(key, hparams):
    state, first = init(key, hparams)
    state, rest = jax.lax.scan(lambda s, _: chunk(s, hparams), state, None, length=n_chunks)
    rest = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), rest)
    return state, jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), first, rest)

  logged_steps = tuple(range(0, train_cfg.steps + 1, train_cfg.log_every))
  return Trainer(init=init, chunk=chunk, train=train, measure=measure, n_chunks=n_chunks,
                 logged_steps=logged_steps)
