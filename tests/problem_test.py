"""Problems built from configs: the text-file task, graph task and config validation."""

import os
import tempfile

from absl.testing import absltest, parameterized
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rc_jax.engine import config_lib
from rc_jax.engine.problem import build_problem


class ProblemTest(parameterized.TestCase):

  @pytest.mark.slow
  def test_text_file_task_trains_on_local_bytes(self):
    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, "corpus.txt")
      with open(path, "w") as f:
        f.write("routing collapse is what a magnitude-blind router does. " * 20)
      config = config_lib.base_config("attention", "tiny")
      config.task.name, config.task.path = "text_file", path
      config_lib.validate(config)
      problem = build_problem(config)
      params = problem.init_params(jax.random.key(0))
      loss = jax.jit(problem.loss)(params, jnp.float32(0.1), jax.random.key(1))
      self.assertTrue(np.isfinite(loss))
      out, _, _ = problem.probe(params, jnp.float32(0.1))
      self.assertEqual(out.logits.shape[-1], 257)  # BOS + 256 byte values
      # an untrained model is near uniform over 257 symbols (random logits add < 2 nats)
      self.assertBetween(float(loss), np.log(257) - 1.0, np.log(257) + 2.0)

  def test_missing_text_file_is_a_config_error(self):
    config = config_lib.base_config("attention", "tiny")
    config.task.name, config.task.path = "text_file", "/nonexistent/corpus.txt"
    with self.assertRaisesRegex(ValueError, "config.task.path.*nonexistent"):
      config_lib.validate(config)

  @parameterized.parameters(
      ("model.score", "gat", "config.model.score"),
      ("model.width", 15, "config.model.width"),
      ("execution.mode", "pmap", "config.execution.mode"),
      ("sweep.learning_rates", (0.0,), "config.sweep.learning_rates"),
      ("sweep.seeds", (), "config.sweep.seeds"),
      ("metrics.onset_metric", "vibes", "config.metrics.onset_metric"),
      ("task.name", "wikipedia", "config.task.name"),
  )
  def test_validation_names_the_key(self, key, value, message):
    config = config_lib.base_config("attention", "tiny")
    section, name = key.split(".")
    config[section][name] = value
    with self.assertRaisesRegex(ValueError, message):
      config_lib.validate(config)

  @parameterized.parameters(("chunk_steps", 3), ("steps", 6), ("log_every", 0))
  def test_train_schedule_must_divide(self, key, value):
    config = config_lib.base_config("attention", "tiny")
    config.train[key] = value
    with self.assertRaisesRegex(ValueError, f"config.train.{key}"):
      config_lib.validate(config)


if __name__ == "__main__":
  absltest.main()
