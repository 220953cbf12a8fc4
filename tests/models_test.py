"""Models return, per routed layer, its routing, content-free prior, hidden and routed states."""

import importlib.util
import os

from absl.testing import absltest, parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from rc_jax import routers
from rc_jax.engine.config_lib import base_config
from rc_jax.models import AttnResLM, GraphClassifier, RouterLM

B, T, VOCAB, WIDTH, HEADS = 2, 6, 11, 8, 2
N_NODES, N_FEATURES, N_CLASSES = 7, 5, 3
BRAKE = 0.3


def _config_file(router, preset):
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "configs",
                      f"{router}.py")
  spec = importlib.util.spec_from_file_location(f"configs_{router}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(preset)


def _model_config(router, **overrides):
  cfg = base_config(router, "tiny").model
  cfg.update(width=WIDTH, n_heads=HEADS, depth=1)  # one layer unless the count is under test
  cfg.update(**overrides)
  return cfg


def _init_and_apply(model, *inputs):
  """Params and the with-routing output at `BRAKE` of the freshly initialised model (one trace)."""
  init = jax.jit(lambda key: model.init_with_output(key, *inputs, jnp.float32(BRAKE),
                                                    with_routing=True))
  out, params = init(jax.random.key(0))
  return params, out


TOKENS = jax.random.randint(jax.random.key(1), (B, T), 0, VOCAB)


def _ring_hops(n):
  adjacency = jnp.roll(jnp.eye(n), 1, axis=1) + jnp.roll(jnp.eye(n), -1, axis=1)
  return routers.hops_from_adjacency(adjacency)


def _positional_attention_prior(slopes, normalise):
  """Analytic prior `[H, T, T]`: row-normalised exp / sigmoid of `-beta * slope_h * (i - j)`."""
  lag = np.arange(T)[:, None] - np.arange(T)[None, :]
  logits = -BRAKE * slopes[:, None, None] * lag
  if normalise == "softmax":
    magnitudes = np.exp(logits)
  else:
    magnitudes = 1.0 / (1.0 + np.exp(-(logits - np.log(T))))
  magnitudes = np.where(lag >= 0, magnitudes, 0.0)
  return magnitudes / np.sum(magnitudes, -1, keepdims=True)


class RouterLMTest(parameterized.TestCase):

  @parameterized.parameters(dict(normalise="softmax", brake_slopes="alibi"),
                            dict(normalise="sigmoid", brake_slopes="shared"))
  def test_attention_priors_and_routed(self, normalise, brake_slopes):
    cfg = _model_config("attention", normalise=normalise, brake_slopes=brake_slopes)
    _, out = _init_and_apply(RouterLM("attention", VOCAB, cfg), TOKENS)
    for name in ("routings", "priors", "hidden", "routed"):
      self.assertLen(getattr(out, name), cfg.depth)
    slopes = routers.brake.head_slopes(brake_slopes, HEADS)
    expected = _positional_attention_prior(np.ones(HEADS) if slopes is None else slopes, normalise)
    for routing, prior, hidden, routed in zip(out.routings, out.priors, out.hidden, out.routed):
      chex.assert_shape((routing.weights, prior.weights), (B, HEADS, T, T))
      chex.assert_shape((hidden, routed), (B, T, WIDTH))
      np.testing.assert_allclose(prior.weights, np.broadcast_to(expected, (B, HEADS, T, T)),
                                 atol=1e-5)
      self.assertFalse(np.allclose(routing.weights, prior.weights, atol=1e-4))
      if normalise == "sigmoid":
        chex.assert_shape((routing.row_mass, prior.row_mass), (B, HEADS, T))

  def test_prior_router_routes_by_its_prior(self):
    cfg = _model_config("attention", content=False, brake_slopes="alibi")
    _, out = _init_and_apply(RouterLM("attention", VOCAB, cfg), TOKENS)
    for routing, prior in zip(out.routings, out.priors):
      np.testing.assert_allclose(routing.weights, prior.weights, atol=1e-6)


class GraphClassifierTest(parameterized.TestCase):

  @parameterized.parameters(
      dict(score="dot", radius=2, params=("qkv",)),
      dict(score="gat", radius=1, params=("proj", "gat_dst", "gat_src")),
      dict(score="gatv2", radius=1, params=("dst", "src", "gatv2_a")),
  )
  def test_priors_routed_and_params(self, score, radius, params):
    cfg = _model_config("graph", score=score, max_hops=2)
    features = jax.random.normal(jax.random.key(2), (N_NODES, N_FEATURES))
    hops = _ring_hops(N_NODES)
    variables, out = _init_and_apply(GraphClassifier(N_CLASSES, cfg), features, hops)
    chex.assert_shape(out.logits, (N_NODES, N_CLASSES))
    mixer = variables["params"]["attn_0"]
    for name in params:
      self.assertIn(name, mixer)
    if score != "dot":
      chex.assert_shape(mixer[params[-1]], (HEADS, WIDTH // HEADS))
    neighbourhood = (hops >= 0) & (hops <= radius)
    expected = np.exp(-BRAKE * hops) * neighbourhood
    expected = expected / np.sum(expected, -1, keepdims=True)
    for name in ("routings", "priors", "hidden", "routed"):
      self.assertLen(getattr(out, name), cfg.depth)
    for routing, prior, hidden, routed in zip(out.routings, out.priors, out.hidden, out.routed):
      chex.assert_shape((routing.weights, prior.weights), (HEADS, N_NODES, N_NODES))
      chex.assert_shape((hidden, routed), (N_NODES, WIDTH))
      np.testing.assert_allclose(prior.weights, np.broadcast_to(expected, prior.weights.shape),
                                 atol=1e-5)
      self.assertEqual(float(jnp.max(jnp.where(neighbourhood, 0.0, routing.weights))), 0.0)


class AttnResTest(absltest.TestCase):

  def test_every_sublayer_is_routed(self):
    cfg = _model_config("depth", depth=2)
    variables, out = _init_and_apply(AttnResLM(VOCAB, cfg), TOKENS)
    n_routed = 2 * cfg.depth  # sublayers 1 .. 2 depth - 1, then the output router
    for name in ("routings", "priors", "hidden", "routed"):
      self.assertLen(getattr(out, name), n_routed)
    params = variables["params"]
    self.assertNotIn("route_0", params)  # sublayer 0 reads the embedding alone
    for s in range(1, 2 * cfg.depth):
      np.testing.assert_array_equal(params[f"route_{s}"]["query"], 0.0)
    n_sources = list(range(2, 2 * cfg.depth + 1)) + [2 * cfg.depth + 1]
    for s, routing, prior, hidden, routed in zip(n_sources, out.routings, out.priors, out.hidden,
                                                 out.routed):
      chex.assert_shape((routing.weights, prior.weights), (B, T, 1, s))
      chex.assert_shape((hidden, routed), (B, T, WIDTH))
      expected = np.exp(-BRAKE * (s - np.arange(s)))
      np.testing.assert_allclose(prior.weights[0, 0, 0], expected / np.sum(expected), atol=1e-6)
      # zero pseudo-queries at init: the routing is its prior
      np.testing.assert_allclose(routing.weights, prior.weights, atol=1e-6)
    np.testing.assert_allclose(out.hidden[-1], out.routed[-1])

  def test_cpu_preset_routes_at_least_seven_sublayers(self):
    config = _config_file("depth", "cpu")
    self.assertGreaterEqual(2 * config.model.depth, 7)

  def test_prior_router_has_no_pseudo_queries(self):
    cfg = _model_config("depth", content=False)
    variables, out = _init_and_apply(AttnResLM(VOCAB, cfg), TOKENS)
    self.assertNotIn("query", variables["params"]["route_1"])
    self.assertLen(out.routings, 2 * cfg.depth)


if __name__ == "__main__":
  absltest.main()
