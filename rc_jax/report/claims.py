"""The paper's claims (arXiv 2606.22325) and two tests beyond it, each evaluated by stated rules.

Input: `values[sweep_name]` as `collect.sweep_values` writes it. Every claim returns
`{"title", "hypothesis", "rows": [...], "verdict", "rule"}`; a row holds the subject (a sweep), the
measurement (trained model: mean +- seed sd and the paired effect), the null values, an outcome and
the sweeps it used. Outcomes map to verdicts: yes -> reproduced, no -> not reproduced.
"""

from __future__ import annotations

import math

from rc_jax.report import stats
from rc_jax.report.suite import trained_sweeps

VERDICTS = {stats.YES: "reproduced", stats.NO: "not reproduced",
            stats.INCONCLUSIVE: "inconclusive"}
NULLS = ("init", "prior", "shuffled")


def _seed_values(values: dict, which: str, metric: str, brake: float | None = None) -> list:
  """Per-seed values of `metric` (`which` in final/init/shuffled) at `brake` (default: smallest),
  first learning rate, ordered by seed."""
  if not values:   # a sweep that was not run: no seeds, every comparison inconclusive
    return []
  runs = values["runs"]
  brake = min(r["brake"] for r in runs) if brake is None else brake
  lr = runs[0]["learning_rate"]
  column = values[which].get(metric)
  if column is None:
    return []
  picked = sorted((r["seed"], column[i]) for i, r in enumerate(runs)
                  if r["brake"] == brake and r["learning_rate"] == lr)
  return [v for _, v in picked]


def _null_values(values: dict, name: str, null: str, metric: str) -> list:
  """The per-seed null of sweep `name`: its own init / shuffled values, or its prior twin's final."""
  if null == "prior":
    twin = values.get(_prior_name(name))
    return _seed_values(twin, "final", metric) if twin else []
  return _seed_values(values.get(name), null, metric)


def _prior_name(name: str) -> str:
  """The prior twin shared by a sweep and its controls: the family (and task) with `prior`."""
  family, *variants = name.split("-")
  task = [v for v in variants if v in ("recall",)]
  return "-".join([family] + task + ["prior", "brake0"])


def _fmt(x: float, digits: int = 3) -> str:
  return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}g}"


def _describe(result: dict) -> str:
  return (f"{_fmt(result['trained'])} ± {_fmt(result['trained_sd'], 2)} "
          f"(effect {_fmt(result['effect'], 2)} ± {_fmt(result['bound'], 2)}, n={result['n']})")


def signature_test(values: dict, name: str, component: dict, confidence: float,
                   nulls=NULLS) -> dict:
  """One signature component of sweep `name` at the smallest brake against each null."""
  metric = component["metric"]
  trained = _seed_values(values.get(name), "final", metric)
  per_null = {null: stats.compare(trained, _null_values(values, name, null, metric),
                                  direction=component["direction"], margin=component["margin"],
                                  relative=component["relative"], confidence=confidence)
              for null in nulls}
  outcome = stats.all_of([r["outcome"] for r in per_null.values()])
  return {"metric": metric, "per_null": per_null, "outcome": outcome}


def _signature_row(claim: str, values: dict, name: str, label: str, component: dict,
                   confidence: float, nulls=NULLS) -> dict:
  test = signature_test(values, name, component, confidence, nulls)
  first = next(iter(test["per_null"].values()))
  return {"claim": claim, "subject": name, "what": f"{label}: {test['metric']}",
          "measurement": _describe(first) if first["n"] else "n/a",
          "nulls": "; ".join(f"{null} {_fmt(r['null'])} (effect {_fmt(r['effect'], 2)}, {r['outcome']})"
                             for null, r in test["per_null"].items()),
          "outcome": test["outcome"], "sweeps": [name] + ([_prior_name(name)] if "prior" in nulls
                                                          else [])}


def claim_signature(values: dict, cfg) -> dict:
  rows, family_outcomes = [], []
  for sweep in trained_sweeps():
    parts = [_signature_row("1", values, sweep.name, label, dict(component), cfg.confidence)
             for label, component in cfg.signature.items()]
    outcome = stats.all_of([row["outcome"] for row in parts])
    rows.extend(parts)
    rows.append({"claim": "1", "subject": sweep.name, "what": "all three components",
                 "measurement": "", "nulls": "", "outcome": outcome, "sweeps": [sweep.name]})
    family_outcomes.append(outcome)
  return {"title": "1. Every family shows the signature when trained",
          "hypothesis": "Trained at brake 0, each of the five routers concentrates routing onto a few "
                        "shared sources, collapses its routed representations and stratifies its "
                        "key norms, beyond the model at initialisation, the same architecture "
                        "trained with a content-free (positional-prior) router, and the trained "
                        "model on shuffled input.",
          "rule": "A component holds when it is beyond its margin against every null (paired over "
                  "seeds); a sweep reproduces when all three hold; the claim when every sweep does.",
          "rows": rows, "verdict": VERDICTS[stats.all_of(family_outcomes)]}


def _onset_row(claim: str, values: dict, name: str, min_fraction: float,
               exploratory: bool = False) -> dict:
  v = values.get(name)
  if v is None:
    return {"claim": claim, "subject": name, "what": "onset by brake", "measurement": "not run",
            "nulls": "", "outcome": stats.INCONCLUSIVE, "reason": "sweep not run",
            "sweeps": [name], "exploratory": exploratory}
  brakes = sorted({r["brake"] for r in v["runs"]})
  lr = v["runs"][0]["learning_rate"]
  key, onset = (("exploratory_onset_step", v["exploratory_onset"]) if exploratory else
                ("onset_step", v["onset"]))
  onsets = [[r[key] for r in v["runs"] if r["brake"] == b and r["learning_rate"] == lr]
            for b in brakes]
  result = stats.onset_progression(brakes, onsets, v["budget"], min_fraction)
  cells = ", ".join(f"{b:g}: {'never' if math.isinf(m) else _fmt(m)} ({f:.0%})"
                    for b, m, f in zip(result["brakes"], result["medians"], result["fractions"]))
  return {"claim": claim, "subject": name,
          "what": f"{'EXPLORATORY ' if exploratory else ''}onset ({onset['metric']} > "
                  f"{onset['threshold']:g}, {onset['layer_reduce']} over layers) by brake",
          "measurement": f"median onset step (share of seeds with an onset), budget "
                         f"{v['budget']}: {cells}",
          "nulls": "", "outcome": result["outcome"], "reason": result.get("reason", ""),
          "sweeps": [name], "progression": result}


def claim_brake(values: dict, cfg) -> dict:
  rows = [_onset_row("2", values, s.name, cfg.onset.min_fraction) for s in trained_sweeps()]
  exploratory = [dict(_onset_row("2", values, s.name, cfg.onset.min_fraction, exploratory=True),
                      exploratory=True) for s in trained_sweeps()]
  return {"title": "2. The brake decides when, not whether",
          "hypothesis": "Sweeping the positional brake moves the onset of concentration from early "
                        "to late to never within the training budget, for every family.",
          "rule": "Per sweep: an onset at the smallest brake, censored median onsets "
                  "non-decreasing in the brake, some brake later than the first, and no onset in "
                  "most seeds at the largest brake. No onset at the smallest brake is "
                  "inconclusive. Whether braked runs collapse later than the budget ('not "
                  "whether') cannot be seen within a finite budget. Rows marked EXPLORATORY apply "
                  "the same rule to the onset of `configs/report.py`'s exploratory_onset, chosen "
                  "after the first sweeps were seen; they do not enter the verdict.",
          "rows": rows + exploratory,
          "verdict": VERDICTS[stats.all_of([r["outcome"] for r in rows])]}


def claim_causal(values: dict, cfg) -> dict:
  concentration = dict(cfg.signature.concentration)
  metric = concentration["metric"]
  selective = _seed_values(values.get("ssm"), "final", metric)
  frozen = _seed_values(values.get("ssm-frozen-brake0"), "final", metric)
  freeze = stats.compare(selective, frozen, direction=1, margin=concentration["margin"],
                         confidence=cfg.confidence)
  rows = [{"claim": "3", "subject": "ssm vs ssm-frozen-brake0", "what": f"{metric}, selective - frozen",
           "measurement": _describe(freeze), "nulls": f"frozen {_fmt(freeze['null'])}",
           "outcome": freeze["outcome"], "sweeps": ["ssm", "ssm-frozen-brake0"]},
          dict(_onset_row("3", values, "rwkv", cfg.onset.min_fraction),
               what="RWKV carry sweep (the brake is the extra decay): onset by carry")]
  return {"title": "3. The routing mechanism causes the signature",
          "hypothesis": "Freezing Mamba's selectivity removes the concentration; sweeping RWKV's "
                        "carry moves its onset.",
          "rule": "The selective SSM's concentration exceeds the frozen SSM's beyond the margin "
                  "(paired by seed), and the RWKV carry sweep passes claim 2's rule.",
          "caveat": "A frozen (time-invariant) SSM has a kernel that depends only on the lag t - s, "
                    "so no source can be shared by all targets by construction: the freeze removes "
                    "the *possibility* of a content-chosen shared source, which makes this ablation "
                    "weaker evidence of causation than it looks.",
          "rows": rows, "verdict": VERDICTS[stats.all_of([r["outcome"] for r in rows])]}


def claim_normalised_keys(values: dict, cfg) -> dict:
  concentration = dict(cfg.signature.concentration)
  rows = [_signature_row("4", values, name, "concentration", concentration, cfg.confidence)
          for name in ("attention-cosine-brake0", "depth")]
  for name in ("attention-cosine-brake0", "depth"):
    cv = _seed_values(values.get(name), "final", "key_norm_cv")
    rows.append({"claim": "4", "subject": name, "what": "key_norm_cv (context)",
                 "measurement": _fmt(_mean(cv)), "nulls": "", "outcome": "", "sweeps": [name]})
  top = _seed_values(values.get("depth"), "final", "top_source_weight")
  uniform = _seed_values(values.get("depth"), "final", "top_source_uniform")
  rows.append({"claim": "4", "subject": "depth", "what": "top-source weight vs uniform "
               "(paper: 0.643 vs 0.245)", "measurement": f"{_fmt(_mean(top))} vs "
               f"{_fmt(_mean(uniform))}", "nulls": "", "outcome": "", "sweeps": ["depth"]})
  outcome = stats.all_of([r["outcome"] for r in rows if r["outcome"]])
  return {"title": "4. Norm stratification is not needed",
          "hypothesis": "With norm-normalised keys (AttnRes's RMS-normalised keys; attention with "
                        "cosine scores) routing still concentrates.",
          "rule": "Claim 1's concentration component holds for attention-cosine and for depth.",
          "rows": rows, "verdict": VERDICTS[outcome]}


# concentration predicted by each account (True: present)
_ACCOUNTS = {  # sweep: (routing account, normalisation account)
    "attention": (True, True), "attention-sigmoid-brake0": (True, False),
    "rwkv": (True, False), "rwkv-noescape-brake0": (True, True),
    "ssm": (True, False), "ssm-noescape-brake0": (True, False),
}


def claim_competing(values: dict, cfg) -> dict:
  concentration = dict(cfg.signature.concentration)
  rows, routing_hits, normalisation_hits = [], 0, 0
  for name, (routing_predicts, normalisation_predicts) in _ACCOUNTS.items():
    row = _signature_row("5", values, name, "concentration", concentration, cfg.confidence)
    observed = {stats.YES: True, stats.NO: False}.get(row["outcome"])
    if observed is not None and routing_predicts != normalisation_predicts:
      routing_hits += observed == routing_predicts
      normalisation_hits += observed == normalisation_predicts
    row["what"] += (f" (routing account predicts {'yes' if routing_predicts else 'no'}, "
                    f"normalisation account {'yes' if normalisation_predicts else 'no'})")
    rows.append(row)
  if routing_hits > normalisation_hits:
    outcome = stats.YES
  elif normalisation_hits > routing_hits:
    outcome = stats.NO
  else:
    outcome = stats.INCONCLUSIVE
  return {"title": "5. The competing explanation: a no-op forced by normalisation",
          "hypothesis": "The routing account predicts concentration in every control; the "
                        "normalisation account predicts it only where rows are normalised and no "
                        "other no-op exists (not in sigmoid attention, not in RWKV with its gate, "
                        "token shift and bonus, not in the un-normalised SSM).",
          "rule": "Among the sweeps where the two accounts disagree, count the decisive outcomes "
                  "each predicts; reproduced (routing account favoured) if it predicts more, not "
                  f"reproduced if the normalisation account does. Here: routing {routing_hits}, "
                  f"normalisation {normalisation_hits}.",
          "rows": rows, "verdict": VERDICTS[outcome]}


def claim_norm_aware_fix(values: dict, cfg) -> dict:
  rows, outcomes = [], []
  for family in ("attention", "graph"):
    fix = f"{family}-distance-brake0"
    for label, component in cfg.signature.items():
      component = dict(component)
      result = stats.compare(_seed_values(values.get(fix), "final", component["metric"]),
                             _seed_values(values.get(family), "final", component["metric"]),
                             direction=-component["direction"], margin=component["margin"],
                             relative=component["relative"], confidence=cfg.confidence)
      rows.append({"claim": "6", "subject": f"{fix} vs {family}",
                   "what": f"{label} reduced: {component['metric']}",
                   "measurement": _describe(result), "nulls": f"dot {_fmt(result['null'])}",
                   "outcome": result["outcome"], "sweeps": [fix, family]})
      if label == "concentration":
        outcomes.append(result["outcome"])
    loss = [_seed_values(values.get(n), "final", "loss") for n in (fix, family)]
    rows.append({"claim": "6", "subject": f"{fix} vs {family}", "what": "final training loss",
                 "measurement": f"distance {_fmt(_mean(loss[0]))} vs dot {_fmt(_mean(loss[1]))}",
                 "nulls": "", "outcome": "", "sweeps": [fix, family]})
  return {"title": "6. The norm-aware fix",
          "hypothesis": "Restoring the -||k||^2 term (score='distance') reduces concentration, "
                        "collapse and stratification at equal size and steps.",
          "rule": "Reproduced when distance scoring lowers concentration beyond its margin for "
                  "both attention and graph attention (paired by seed); collapse, stratification "
                  "and loss are reported alongside.",
          "rows": rows, "verdict": VERDICTS[stats.all_of(outcomes)]}


def _mean(values: list) -> float:
  finite = [v for v in values if v is not None and math.isfinite(v)]
  return sum(finite) / len(finite) if finite else math.nan


CLAIMS = (claim_signature, claim_brake, claim_causal, claim_normalised_keys, claim_competing,
          claim_norm_aware_fix)


def evaluate(values: dict, cfg) -> list[dict]:
  return [claim(values, cfg) for claim in CLAIMS]

