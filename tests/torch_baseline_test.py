"""The benchmark's PyTorch baseline computes what the sweep computes: same logits, metrics, init."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the PyTorch baseline needs torch (the test extra)")
from benchmarks import torch_lm  # pylint: disable=g-import-not-at-top,wrong-import-position
from rc_jax.engine import config_lib, train
from rc_jax.measurement import metrics
from rc_jax.models import build_model
from rc_jax.engine.problem import build_problem, sequence_probe_batch
from rc_jax.routers.routing import Routing


def _config():
  return config_lib.base_config("attention", "tiny")  # width 16, seq 16, 2 heads


@pytest.mark.slow
class TorchBaselineTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.config = _config()
    cls.problem = build_problem(cls.config)
    cls.params = cls.problem.init_params(jax.random.key(3))
    m = cls.config.model
    cls.model = torch_lm.TorchLM(vocab_size=cls.config.task.vocab_size,
                                 seq_len=cls.config.task.seq_len, width=m.width, depth=m.depth,
                                 n_heads=m.n_heads, mlp_ratio=m.mlp_ratio)
    torch_lm.load_flax_params(cls.model, cls.params)

  def test_same_logits_with_and_without_written_out_attention(self):
    tokens = jax.random.randint(jax.random.key(0), (3, self.config.task.seq_len), 0,
                                self.config.task.vocab_size)
    flax_logits = build_model(self.config, self.config.task.vocab_size).apply(
        self.params, tokens, jnp.float32(0.3)).logits
    torch_tokens = torch.from_numpy(np.array(tokens)).long()
    with torch.no_grad():
      fused, _ = self.model(torch_tokens, 0.3)
      written, _ = self.model(torch_tokens, 0.3, with_routing=True)
    np.testing.assert_allclose(fused.numpy(), np.asarray(flax_logits), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(written.numpy(), np.asarray(flax_logits), rtol=1e-4, atol=1e-5)

  def test_same_in_step_measurement(self):
    trainer = train.make_train(self.config)
    hparams = {"brake": jnp.float32(0.3), "learning_rate": jnp.float32(3e-3)}
    expected = jax.jit(trainer.measure)(self.params, hparams)
    probe = sequence_probe_batch(self.config.task)  # the batch trainer.measure reads
    as_long = lambda x: torch.from_numpy(np.array(x)).long()
    got = torch_lm.measure(self.model, (as_long(probe.inputs), as_long(probe.targets)), 0.3)
    self.assertEqual(set(got), set(expected) - {"loss", "step"})
    for name, value in got.items():
      np.testing.assert_allclose(value, np.asarray(expected[name]), rtol=2e-4, atol=2e-5,
                                 err_msg=name)

  def test_same_routing_metrics_on_concentrated_weights(self):
    # At initialisation shared_sources is 0; these hand-built weights (sharp, sink- and
    # hub-favouring, with a strong brake among the priors) make every metric non-trivial.
    t = 8
    lag = np.arange(t)[:, None] - np.arange(t)[None, :]
    causal = lag >= 0
    rng = np.random.default_rng(0)
    for brake in (0.3, 5.0):
      bias = np.where(causal, -brake * lag, -np.inf)
      prior = np.exp(bias - bias.max(-1, keepdims=True))
      prior = (prior / prior.sum(-1, keepdims=True)).astype(np.float32)
      logits = 8.0 * rng.normal(size=(2, 2, t, t)) + np.array([8.0, 4.0] + [0.0] * (t - 2))
      logits = np.where(causal, logits + bias, -np.inf)
      weights = np.exp(logits - logits.max(-1, keepdims=True))
      weights = (weights / weights.sum(-1, keepdims=True)).astype(np.float32)
      key_norms = rng.uniform(0.5, 2.0, size=(2, 2, t)).astype(np.float32)
      got = torch_lm.routing_metrics(torch.from_numpy(weights), torch.from_numpy(prior),
                                     torch.from_numpy(key_norms), torch.from_numpy(causal),
                                     eps=0.3, hub_factor=2.0)
      expected = metrics.collapse_metrics(
          Routing(weights=weights, mask=causal, key_norms=key_norms),
          prior=Routing(weights=prior, mask=causal, key_norms=np.zeros(t, np.float32)))
      self.assertEqual(set(got), set(expected))
      self.assertGreater(float(expected["shared_sources"]), 0.0)
      for name, value in got.items():
        np.testing.assert_allclose(value.numpy(), np.asarray(expected[name]), rtol=2e-4,
                                   atol=2e-5, err_msg=f"{name} at brake {brake}")

  def test_same_initial_scales(self):
    torch.manual_seed(0)
    model = torch_lm.TorchLM(vocab_size=32, seq_len=64, width=64, depth=1, n_heads=4, mlp_ratio=4)
    config = _config()
    config.model.update(width=64, depth=1, n_heads=4)
    config.task.update(vocab_size=32, seq_len=64)
    flax_params = build_problem(config).init_params(jax.random.key(0))["params"]
    pairs = {
        "tokens.weight": flax_params["embed"]["tokens"]["embedding"],
        "positions": flax_params["embed"]["positions"],
        "blocks.0.qkv.weight": flax_params["block_0"]["AttentionMixer_0"]["qkv"]["kernel"],
        "blocks.0.down.weight": flax_params["block_0"]["MLP_0"]["down"]["kernel"],
        "unembed.weight": flax_params["unembed"]["kernel"],
    }
    named = dict(model.named_parameters())
    for name, flax_value in pairs.items():
      ours, theirs = named[name].detach().numpy(), np.asarray(flax_value)
      self.assertAlmostEqual(ours.std() / theirs.std(), 1.0, delta=0.1, msg=name)
      self.assertAlmostEqual(np.abs(ours).max() / np.abs(theirs).max(), 1.0, delta=0.35, msg=name)


if __name__ == "__main__":
  absltest.main()
