"""The outputs: files and figures from a sweep's runs and logs, and comparisons of finished sweeps.

    tables        metrics.csv, onsets.csv, onset_summary.csv, summary.json (atomic writes)
    plots         phase diagram, onset vs brake, survival, final metrics (matplotlib, Agg)
    artifacts     every table and figure of a finished sweep
    tensorboard   per-run event files, appended per chunk
    compare       finished workdirs side by side

Inputs are plain (runs: list of dicts, logs: `{name: [R, K(, L)]}`, onset: dict), so nothing here
knows how they were trained. May import: `rc_jax.measurement`, NumPy, matplotlib.
"""
