"""Contract tests for the token, node and depth routers (the time routers have their own files)."""

from absl.testing import absltest, parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from rc_jax import routers

B, H, T, D = 2, 3, 8, 4
N_NODES = 7
N_LAYERS = 5


def _brake_kwargs(brake):
  """`brake=None` calls the router without a brake argument (its default)."""
  return {} if brake is None else {"brake": brake}


def _attention_case(score="dot", causal=True, **options):
  q, k, v = jax.random.normal(jax.random.key(0), (3, B, H, T, D))
  k = k * jnp.linspace(0.5, 2.0, T)[:, None]  # stratified key norms

  def call(brake, q=q, k=k, v=v):
    return routers.softmax_attention(q, k, v, **_brake_kwargs(brake), causal=causal, score=score,
                                     **options)

  return call, (q, k, v), routers.lag_distance(T, T, causal=causal)


def _ring_hops(n):
  adjacency = jnp.roll(jnp.eye(n), 1, axis=1) + jnp.roll(jnp.eye(n), -1, axis=1)
  return routers.hops_from_adjacency(adjacency)


def _graph_case(score="dot"):
  q, k, v = jax.random.normal(jax.random.key(1), (3, B, N_NODES, D))
  hops = _ring_hops(N_NODES)
  a = jax.random.normal(jax.random.key(2), (2, D))
  vectors = {"gat": dict(gat_vectors=tuple(a)), "gatv2": dict(gatv2_vector=a[0])}.get(score, {})

  def call(brake, q=q, k=k, v=v):
    return routers.graph_attention(q, k, v, hops, **_brake_kwargs(brake), max_hops=2, score=score,
                                   **vectors)

  return call, (q, k, v), hops


def _depth_case():
  query = jax.random.normal(jax.random.key(3), (D,))
  sources = jax.random.normal(jax.random.key(4), (B, T, N_LAYERS, D))

  def call(brake, query=query, sources=sources):
    return routers.depth_attention(query, sources, **_brake_kwargs(brake))

  return call, (query, sources), (N_LAYERS - jnp.arange(N_LAYERS))[None, :]


CASES = {
    "attention_dot": lambda: _attention_case("dot"),
    "attention_distance": lambda: _attention_case("distance"),
    "attention_cosine": lambda: _attention_case("cosine"),
    "attention_bidirectional": lambda: _attention_case("dot", causal=False),
    "attention_sigmoid_alibi": lambda: _attention_case(
        "dot", normalise="sigmoid", slopes=routers.brake.head_slopes("alibi", H)),
    "graph_dot": lambda: _graph_case("dot"),
    "graph_gat": lambda: _graph_case("gat"),
    "graph_gatv2": lambda: _graph_case("gatv2"),
    "depth": _depth_case,
}
NAMED = [dict(testcase_name=name, case=name) for name in CASES]


def _farthest_mass(routing, distance):
  """Mass each target puts on its farthest admissible sources (largest brake distance)."""
  w = routing.weights
  mask = jnp.broadcast_to(routing.mask, w.shape)
  distance = jnp.where(mask, jnp.broadcast_to(distance, w.shape), -jnp.inf)
  farthest = distance == jnp.max(distance, axis=-1, keepdims=True)
  return jnp.sum(jnp.where(farthest & mask, w, 0.0), axis=-1)


class RouterContractTest(parameterized.TestCase):

  @parameterized.named_parameters(*NAMED)
  def test_rows_are_distributions_inside_the_mask(self, case):
    call, _, _ = CASES[case]()
    out, routing = call(0.3)
    w = routing.weights
    mask = jnp.broadcast_to(routing.mask, w.shape)
    self.assertTrue(bool(jnp.all(w >= 0)))
    self.assertEqual(float(jnp.max(jnp.where(mask, 0.0, w))), 0.0)
    np.testing.assert_allclose(jnp.sum(w, -1), 1.0, atol=1e-5)
    self.assertEqual(routing.key_norms.shape[-1], w.shape[-1])
    chex.assert_tree_all_finite((out, routing))

  @parameterized.named_parameters(*NAMED)
  def test_zero_brake_is_no_brake(self, case):
    call, _, _ = CASES[case]()
    chex.assert_trees_all_close(call(0.0), call(None))
    chex.assert_trees_all_close(call(jnp.float32(0.0)), call(None))

  @parameterized.named_parameters(*NAMED)
  def test_brake_never_adds_mass_to_farthest_source(self, case):
    call, _, distance = CASES[case]()
    masses = [_farthest_mass(call(b)[1], distance) for b in (0.0, 0.1, 0.5, 2.0)]
    for lower, higher in zip(masses, masses[1:]):
      self.assertTrue(bool(jnp.all(higher <= lower + 1e-6)))
    # and the brake does something
    self.assertLess(float(jnp.mean(masses[-1])), float(jnp.mean(masses[0])))

  @parameterized.named_parameters(*NAMED)
  def test_jit_matches_eager(self, case):
    call, _, _ = CASES[case]()
    chex.assert_trees_all_close(jax.jit(call)(0.25), call(0.25), atol=1e-6)

  @parameterized.named_parameters(*NAMED)
  def test_vmap_over_brake_matches_loop(self, case):
    call, _, _ = CASES[case]()
    brakes = jnp.array([0.0, 0.2, 1.0])
    batched = jax.vmap(call)(brakes)
    looped = jax.tree.map(lambda *xs: jnp.stack(xs), *[call(b) for b in brakes])
    chex.assert_trees_all_close(batched, looped, atol=1e-6)

  @parameterized.named_parameters(*NAMED)
  def test_gradients_finite(self, case):
    call, inputs, _ = CASES[case]()

    def loss(inputs, brake):
      out, routing = call(brake, *inputs)
      return jnp.sum(out ** 2) + jnp.sum(routing.weights ** 2)

    grads = jax.grad(loss, argnums=(0, 1))(inputs, 0.3)
    chex.assert_tree_all_finite(grads)


class AttentionTest(parameterized.TestCase):

  def test_shapes_with_cross_attention(self):
    q = jnp.ones((2, 5, D))
    k = v = jnp.ones((2, 9, D))
    out, routing = routers.softmax_attention(q, k, v)
    chex.assert_shape(out, (2, 5, D))
    chex.assert_shape(routing.weights, (2, 5, 9))
    chex.assert_shape(routing.key_norms, (2, 9))
    # end-aligned: the last query sees every key, the first sees 9 - 5 + 1 = 5
    np.testing.assert_array_equal(jnp.sum(routing.mask, -1), [5, 6, 7, 8, 9])

  def test_extra_mask_combines_with_causality(self):
    q, k, v = jax.random.normal(jax.random.key(5), (3, T, D))
    padding = jnp.arange(T) >= 2  # first two sources are padding
    _, routing = routers.softmax_attention(q, k, v, mask=padding[None, :])
    w = routing.weights
    self.assertEqual(float(jnp.max(w[:, :2])), 0.0)
    np.testing.assert_allclose(jnp.sum(w[2:], -1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(jnp.sum(w[:2], -1), 0.0)  # no admissible source: all zero

  def test_equal_norm_keys_make_dot_equal_distance(self):
    q = jax.random.normal(jax.random.key(6), (T, D))
    k = routers.scores.unit_keys(jax.random.normal(jax.random.key(7), (T, D))) * 3.0
    _, dot = routers.softmax_attention(q, k, k, score="dot")
    _, dist = routers.softmax_attention(q, k, k, score="distance")
    np.testing.assert_allclose(dot.weights, dist.weights, atol=1e-6)

  def test_cosine_reports_unit_key_norms(self):
    call, _, _ = _attention_case("cosine")
    _, routing = call(0.0)
    np.testing.assert_allclose(routing.key_norms, 1.0)

  @parameterized.parameters(
      dict(kwargs=dict(brake=-0.1), message="brake"),
      dict(kwargs=dict(brake=float("nan")), message="brake"),
      dict(kwargs=dict(score="manhattan"), message="score"),
  )
  def test_bad_arguments(self, kwargs, message):
    x = jnp.ones((T, D))
    with self.assertRaisesRegex(ValueError, message):
      routers.softmax_attention(x, x, x, **kwargs)

  def test_shape_mismatch(self):
    with self.assertRaisesRegex(ValueError, "feature dims"):
      routers.softmax_attention(jnp.ones((T, D)), jnp.ones((T, D + 1)), jnp.ones((T, D)))
    with self.assertRaisesRegex(ValueError, "source counts"):
      routers.softmax_attention(jnp.ones((T, D)), jnp.ones((T, D)), jnp.ones((T + 1, D)))

  def test_rope_preserves_norms_and_makes_scores_relative(self):
    x = jax.random.normal(jax.random.key(8), (T, D))
    positions = jnp.arange(T)
    rotated = routers.apply_rope(x, positions)
    np.testing.assert_allclose(jnp.linalg.norm(rotated, axis=-1), jnp.linalg.norm(x, axis=-1),
                               rtol=1e-5)
    q = jnp.broadcast_to(x[0], (T, D))
    k = jnp.broadcast_to(x[1], (T, D))
    scores = jnp.sum(routers.apply_rope(q, positions) * routers.apply_rope(k, positions + 2), -1)
    np.testing.assert_allclose(scores, scores[0], rtol=1e-4, atol=1e-5)
    partial = routers.apply_rope(x, positions, rotary_dim=2)
    np.testing.assert_array_equal(partial[:, 2:], x[:, 2:])
    with self.assertRaisesRegex(ValueError, "rotary_dim"):
      routers.apply_rope(x, positions, rotary_dim=3)


class GraphTest(parameterized.TestCase):

  def test_hops_on_a_path_with_an_isolated_node(self):
    adjacency = jnp.zeros((5, 5)).at[jnp.array([0, 1, 1, 2]), jnp.array([1, 0, 2, 1])].set(1)
    hops = routers.hops_from_adjacency(adjacency)
    np.testing.assert_array_equal(hops[0, :3], [0, 1, 2])
    np.testing.assert_array_equal(hops[3], [-1, -1, -1, 0, -1])

  def test_neighbourhood_is_respected(self):
    hops = _ring_hops(N_NODES)
    q, k, v = jax.random.normal(jax.random.key(9), (3, N_NODES, D))
    for max_hops in (1, 2, 3):
      _, routing = routers.graph_attention(q, k, v, hops, max_hops=max_hops)
      np.testing.assert_array_equal(jnp.sum(routing.mask, -1), 2 * max_hops + 1)
      self.assertEqual(float(jnp.max(jnp.where(hops > max_hops, routing.weights, 0.0))), 0.0)

  def test_unreachable_nodes_get_no_mass(self):
    hops = routers.hops_from_adjacency(jnp.zeros((3, 3)))
    x = jnp.ones((3, D))
    _, routing = routers.graph_attention(x, x, x, hops, max_hops=5)
    np.testing.assert_allclose(routing.weights, jnp.eye(3))

  def test_bad_arguments(self):
    x = jnp.ones((N_NODES, D))
    hops = _ring_hops(N_NODES)
    with self.assertRaisesRegex(ValueError, "gat_vectors"):
      routers.graph_attention(x, x, x, hops, score="gat")
    with self.assertRaisesRegex(ValueError, "max_hops"):
      routers.graph_attention(x, x, x, hops, max_hops=0)
    with self.assertRaisesRegex(ValueError, "node counts"):
      routers.graph_attention(x, x, x, hops[:3, :3])
    with self.assertRaisesRegex(ValueError, "brake"):
      routers.graph_attention(x, x, x, hops, brake=-1)


class DepthTest(absltest.TestCase):

  def test_shapes_and_normalised_keys(self):
    call, _, _ = _depth_case()
    out, routing = call(0.0)
    chex.assert_shape(out, (B, T, D))
    chex.assert_shape(routing.weights, (B, T, 1, N_LAYERS))
    np.testing.assert_allclose(routing.key_norms, jnp.sqrt(D), rtol=1e-4)

  def test_key_magnitude_does_not_change_routing(self):
    query = jax.random.normal(jax.random.key(10), (D,))
    sources = jax.random.normal(jax.random.key(11), (N_LAYERS, D))
    scaled = sources * jnp.array([1.0, 10.0, 0.1, 3.0, 1.0])[:, None]
    _, a = routers.depth_attention(query, sources)
    _, b = routers.depth_attention(query, scaled)
    np.testing.assert_allclose(a.weights, b.weights, atol=1e-5)

  def test_feature_mismatch(self):
    with self.assertRaisesRegex(ValueError, "feature dims"):
      routers.depth_attention(jnp.ones((D + 1,)), jnp.ones((N_LAYERS, D)))


# --- switches against NumPy reference loops (float64) -------------------------------------------

def _np_softmax(logits):
  e = np.exp(logits - np.max(logits))
  return e / np.sum(e)


def _np_leaky(x, slope=0.2):
  return np.where(x >= 0, x, slope * x)


def _np_causal_attention(q, k, v, beta, slopes, normalise, content):
  """Loop over heads h, targets i, sources j <= i: logits, weights, row mass, output."""
  n_heads, n, d = q.shape
  weights, mass, out = np.zeros((n_heads, n, n)), np.zeros((n_heads, n)), np.zeros(v.shape)
  for h in range(n_heads):
    slope = 1.0 if slopes is None else slopes[h]
    for i in range(n):
      logits = np.array([(q[h, i] @ k[h, j] / np.sqrt(d) if content else 0.0)
                         - beta * slope * (i - j) for j in range(i + 1)])
      if normalise == "softmax":
        a = _np_softmax(logits)
      else:
        a = 1.0 / (1.0 + np.exp(-(logits - np.log(n))))
      mass[h, i] = np.sum(a)
      weights[h, i, :i + 1] = a / np.sum(a)
      out[h, i] = a @ v[h, :i + 1]
  return out, weights, mass


def _np_graph_attention(q, k, v, hops, beta, radius, logit_fn):
  """Loop over heads h, nodes i, neighbours j (0 <= hops_ij <= radius): softmax(e - beta hops)."""
  n_heads, n, _ = q.shape
  weights, out = np.zeros((n_heads, n, n)), np.zeros(v.shape)
  for h in range(n_heads):
    for i in range(n):
      nbrs = [j for j in range(n) if 0 <= hops[i, j] <= radius]
      a = _np_softmax(np.array([logit_fn(h, i, j) - beta * hops[i, j] for j in nbrs]))
      weights[h, i, nbrs] = a
      out[h, i] = a @ v[h, nbrs]
  return out, weights


SWITCH_HEADS, SWITCH_T = 4, 6


def _switch_inputs(seed):
  q, k, v = np.asarray(jax.random.normal(jax.random.key(seed), (3, SWITCH_HEADS, SWITCH_T, D)),
                       np.float64)
  return q, k * np.linspace(0.5, 2.0, SWITCH_T)[:, None], v


class AttentionSwitchTest(parameterized.TestCase):

  @parameterized.parameters(
      dict(normalise="softmax", slopes="alibi", content=True),
      dict(normalise="sigmoid", slopes="shared", content=True),
      dict(normalise="sigmoid", slopes="alibi", content=True),
      dict(normalise="softmax", slopes="alibi", content=False),
      dict(normalise="sigmoid", slopes="shared", content=False),
  )
  def test_matches_numpy_loop(self, normalise, slopes, content):
    q, k, v = _switch_inputs(12)
    head_slopes = routers.brake.head_slopes(slopes, SWITCH_HEADS)
    beta = 0.4
    out, routing = routers.softmax_attention(
        jnp.float32(q), jnp.float32(k), jnp.float32(v), brake=beta, normalise=normalise,
        slopes=head_slopes, content=content)
    ref_out, ref_weights, ref_mass = _np_causal_attention(q, k, v, beta, head_slopes, normalise,
                                                          content)
    np.testing.assert_allclose(routing.weights, ref_weights, atol=1e-5)
    np.testing.assert_allclose(out, ref_out, atol=1e-5)
    np.testing.assert_allclose(routing.key_norms, np.linalg.norm(k, axis=-1), rtol=1e-5)
    if normalise == "softmax":
      self.assertIsNone(routing.row_mass)
    else:
      np.testing.assert_allclose(routing.row_mass, ref_mass, atol=1e-5)

  def test_prior_ignores_content_and_is_uniform_without_brake(self):
    q, k, v = (jnp.float32(x) for x in _switch_inputs(13))
    _, a = routers.softmax_attention(q, k, v, brake=0.0, content=False)
    _, b = routers.softmax_attention(2.0 * k, q, v, brake=0.0, content=False)
    counts = np.arange(1, SWITCH_T + 1)[:, None]
    np.testing.assert_allclose(a.weights, np.tril(np.ones((SWITCH_T, SWITCH_T))) / counts
                               * np.ones((SWITCH_HEADS, 1, 1)), atol=1e-6)
    np.testing.assert_allclose(a.weights, b.weights)

  def test_sigmoid_rows_carry_their_own_mass(self):
    # sigmoid(-log S) = 1/(S+1): with no content and no brake every admissible entry is 1/(S+1)
    x = jnp.zeros((SWITCH_T, D))
    out, routing = routers.softmax_attention(x, x, jnp.ones((SWITCH_T, 1)), normalise="sigmoid")
    np.testing.assert_allclose(routing.row_mass, np.arange(1, SWITCH_T + 1) / (SWITCH_T + 1),
                               rtol=1e-5)
    np.testing.assert_allclose(out[:, 0], routing.row_mass, rtol=1e-5)

  def test_alibi_slopes(self):
    np.testing.assert_allclose(routers.brake.alibi_slopes(8), 2.0 ** -np.arange(1, 9))
    np.testing.assert_allclose(routers.brake.alibi_slopes(4), 2.0 ** -np.array([2, 4, 6, 8]))
    # not a power of two: the 4-head slopes, then every other slope of 8 heads
    np.testing.assert_allclose(routers.brake.alibi_slopes(6),
                               2.0 ** -np.array([2, 4, 6, 8, 1, 3]))
    np.testing.assert_allclose(routers.brake.alibi_slopes(1), [2.0 ** -8])
    slopes = routers.brake.head_slopes("alibi", 4)
    np.testing.assert_allclose(np.mean(slopes), 1.0, rtol=1e-6)
    np.testing.assert_allclose(slopes / slopes[0], 4.0 ** -np.arange(4), rtol=1e-6)
    self.assertIsNone(routers.brake.head_slopes("shared", 4))
    with self.assertRaisesRegex(ValueError, "brake_slopes"):
      routers.brake.head_slopes("linear", 4)
    with self.assertRaisesRegex(ValueError, "n_heads"):
      routers.brake.alibi_slopes(0)

  def test_bad_switches(self):
    x = jnp.ones((2, T, D))
    with self.assertRaisesRegex(ValueError, "normalise"):
      routers.softmax_attention(x, x, x, normalise="relu")
    with self.assertRaisesRegex(ValueError, "slopes"):
      routers.softmax_attention(x, x, x, slopes=np.ones(3))
    with self.assertRaisesRegex(ValueError, "slopes"):
      routers.softmax_attention(x, x, x, slopes=np.array([1.0, -1.0]))
    with self.assertRaisesRegex(ValueError, "slopes"):
      routers.softmax_attention(x[0], x[0], x[0], slopes=np.ones(2))


class GraphSwitchTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.hops = np.asarray(_ring_hops(N_NODES))
    self.q, self.k, self.v = np.asarray(
        jax.random.normal(jax.random.key(14), (3, 2, N_NODES, D)), np.float64)
    self.a = np.asarray(jax.random.normal(jax.random.key(15), (3, 2, D)), np.float64)

  def _check(self, score, logit_fn, radius, content=True, beta=0.7, **vectors):
    out, routing = routers.graph_attention(
        jnp.float32(self.q), jnp.float32(self.k), jnp.float32(self.v), self.hops, brake=beta,
        max_hops=3, score=score, content=content, **vectors)
    ref_out, ref_weights = _np_graph_attention(self.q, self.k, self.v, self.hops, beta, radius,
                                               logit_fn)
    np.testing.assert_allclose(routing.weights, ref_weights, atol=1e-5)
    np.testing.assert_allclose(out, ref_out, atol=1e-5)
    np.testing.assert_array_equal(np.sum(np.broadcast_to(routing.mask, ref_weights.shape), -1),
                                  2 * radius + 1)

  def test_gat_is_one_hop_additive(self):
    a_dst, a_src = self.a[0], self.a[1]  # per head [2, D]
    self._check("gat", lambda h, i, j: _np_leaky(a_dst[h] @ self.q[h, i] + a_src[h] @ self.k[h, j]),
                radius=1, gat_vectors=(jnp.float32(a_dst), jnp.float32(a_src)))

  def test_gatv2_is_one_hop_dynamic(self):
    a = self.a[2]
    self._check("gatv2", lambda h, i, j: a[h] @ _np_leaky(self.q[h, i] + self.k[h, j]),
                radius=1, gatv2_vector=jnp.float32(a))

  def test_dot_uses_max_hops(self):
    self._check("dot", lambda h, i, j: self.q[h, i] @ self.k[h, j] / np.sqrt(D), radius=3)

  @parameterized.parameters(dict(score="dot", radius=3), dict(score="gat", radius=1),
                            dict(score="gatv2", radius=1))
  def test_prior_is_hop_softmax(self, score, radius):
    self._check(score, lambda h, i, j: 0.0, radius=radius, content=False)  # no vectors needed
    x = jnp.float32(self.q)
    _, routing = routers.graph_attention(x, x, x, self.hops, max_hops=3, score=score,
                                         content=False)
    mask = np.broadcast_to(routing.mask, routing.weights.shape)
    np.testing.assert_allclose(routing.weights, mask / np.sum(mask, -1, keepdims=True), atol=1e-6)

  def test_gatv2_needs_its_vector(self):
    x = jnp.ones((N_NODES, D))
    with self.assertRaisesRegex(ValueError, "gatv2_vector"):
      routers.graph_attention(x, x, x, _ring_hops(N_NODES), score="gatv2")


class DepthPriorTest(absltest.TestCase):

  def test_prior_is_positional_softmax_over_layers(self):
    query = jax.random.normal(jax.random.key(16), (D,))
    sources = jax.random.normal(jax.random.key(17), (B, N_LAYERS, D))
    beta = 0.6
    out, routing = routers.depth_attention(query, sources, brake=beta, content=False)
    expected = _np_softmax(-beta * (N_LAYERS - np.arange(N_LAYERS)))
    np.testing.assert_allclose(routing.weights, np.broadcast_to(expected, (B, 1, N_LAYERS)),
                               atol=1e-6)
    np.testing.assert_allclose(out, np.einsum("s,bsd->bd", expected, sources), atol=1e-5)
    _, uniform = routers.depth_attention(query, sources, content=False)
    np.testing.assert_allclose(uniform.weights, 1.0 / N_LAYERS, atol=1e-6)
    # a zero pseudo-query is the prior (AttnRes's initialisation)
    _, zero = routers.depth_attention(jnp.zeros(D), sources, brake=beta)
    np.testing.assert_allclose(zero.weights, routing.weights, atol=1e-6)


if __name__ == "__main__":
  absltest.main()
