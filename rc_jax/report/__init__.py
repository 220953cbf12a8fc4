"""The paper's claims as one suite of sweeps, matched nulls and a generated REPORT.md.

    suite.py        which sweeps (config file, preset, variants) each claim needs
    collect.py      a finished sweep -> per-run, per-layer final, initial and shuffled-input values
    claims.py       one table of rows (claim, measurement, nulls, verdict) per claim
    controls.py     planted routings and MiniLM through the verdict pipeline (known yes / no cases)
    calibration.py  the onset thresholds from initialisations and prior twins
    writer.py       REPORT.md and its figures

The top layer: may import every other rc_jax package (the statistics are `rc_jax.measurement.stats`;
`rc_jax.pretrained` only when the MiniLM control runs).
"""
