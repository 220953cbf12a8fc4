"""rc_jax: routing collapse in JAX — pure routers, collapse metrics, sweeps.

    from rc_jax import routers, metrics
    out, routing = routers.softmax_attention(q, k, v, brake=0.1)
    metrics.collapse_metrics(routing)
"""

from rc_jax import identity, metrics, routers

__version__ = "0.1.0"
