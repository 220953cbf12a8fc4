"""The measurement: what the instrument reads, as pure functions.

    metrics    collapse metrics: jitted float32 reductions over a `Routing` record (the one door
               from the routers) or a representation
    onsets     onsets as censored data: Kaplan-Meier curves and medians (NumPy)
    identity   the dot-product / distance-routing identity
    stats      paired comparisons over seeds, minimum detectable effects, the censored onset trend
               test (scipy)

May import: `rc_jax.routers` (the `Routing` record, routers for the identity), JAX, NumPy, SciPy.
"""
