"""What every model returns: logits plus, on request, what the collapse metrics read."""

from __future__ import annotations

import flax.struct
import jax


@flax.struct.dataclass
class ModelOutput:
  """`logits [..., n_classes]`; per-layer `routings` (one `Routing` per routed layer) and
  representations `hidden` (`[B, T, D]` or `[N, D]` each) — empty tuples unless requested."""

  logits: jax.Array
  routings: tuple = ()
  hidden: tuple = ()
