"""Pure router functions: `out, routing = routers.<family>(<inputs>, brake=beta, ...)`.

Five families, one contract (see `routing.Routing`):

  softmax_attention   tokens   q.k/sqrt(D) (or "distance" / "cosine"), brake on i - j
                               (sigmoid normalisation, per-head ALiBi slopes optional)
  graph_attention     nodes    dot over a hop neighbourhood (GAT / GATv2: 1 hop), brake on hops
  selective_ssm       time     Mamba S6 implicit kernel C_t . prod(dA) . Delta_s B_s, extra decay
  rwkv_mixer          time     RWKV WKV kernel exp(-(t-1-s) w + k_s), extra decay (the carry)
  depth_attention     depth    AttnRes softmax(w_l . RMSNorm(v_i)), brake on l - i

The lowest layer: may import JAX and NumPy only (no other rc_jax package).
"""

from rc_jax.routers.attention import softmax_attention
from rc_jax.routers.brake import alibi_slopes, causal_mask, check_brake, head_slopes, lag_distance
from rc_jax.routers.depth import depth_attention, rms_normalise
from rc_jax.routers.graph import gat_logits, gatv2_logits, graph_attention
from rc_jax.routers.hops import UNREACHABLE, hops_from_adjacency
from rc_jax.routers.routing import Routing, masked_softmax, row_normalise
from rc_jax.routers.rwkv import rwkv_mixer
from rc_jax.routers.scan import linear_recurrence
from rc_jax.routers.scores import apply_rope, content_logits, cosine_logits, distance_logits, dot_logits
from rc_jax.routers.ssm import implicit_kernel, init_ssm_params, selective_ssm
