"""The paper's claims as one suite of sweeps, matched nulls and a generated REPORT.md.

    suite.py     which sweeps (config file, preset, variants) each claim needs
    collect.py   a finished sweep -> per-run final, initial and shuffled-input values
    stats.py     paired comparisons over seeds and the stated verdict rules
    claims.py    one table of rows (claim, measurement, nulls, verdict) per claim
    writer.py    REPORT.md and its figures
"""
