"""What every model returns: logits plus, on request, what the collapse metrics read."""

from __future__ import annotations

import flax.struct
import jax


@flax.struct.dataclass
class ModelOutput:
  """What a model returns; every tuple is empty unless `with_routing=True`, else one entry per
  routed layer (sublayer for AttnRes), in order:

    logits    `[..., n_classes]`
    routings  the `Routing` of each routed layer
    priors    its content-free positional prior: the same router on the same inputs and brake with
              the content score removed (`content=False`), the null the metrics compare against
    hidden    the representation after the layer (residual stream), `[B, T, D]` or `[N, D]`
    routed    what the router wrote before any residual add, same shape as `hidden`
  """

  logits: jax.Array
  routings: tuple = ()
  priors: tuple = ()
  hidden: tuple = ()
  routed: tuple = ()
