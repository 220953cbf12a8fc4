"""Streamed pretrained models (`pretrained.load(path, stream=True)`): one layer's weights at a time.

For every architecture a checkpoint is written from its tensor specs (no torch needed) and loaded
both ways: the streamed forward, layer iterator, random-init null and measurement must equal the
in-memory ones; a streamed model reads each layer when the forward reaches it, and a corrupt layer
is named when it is read.
"""

import os
import shutil
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np
from safetensors.numpy import load_file, save_file

from rc_jax import pretrained
from rc_jax.pretrained import analysis, loading, probe
from pretrained_errors_test import write_checkpoint  # pylint: disable=g-bad-import-order

_VOCAB = 40
# three layers each, with the per-layer switches that depend on the layer index turned on
CONFIGS = {
    "gpt2": {"model_type": "gpt2", "n_layer": 3, "n_head": 2, "n_embd": 16, "vocab_size": _VOCAB,
             "n_positions": 16, "scale_attn_by_inverse_layer_idx": True},
    "gpt_neox": {"model_type": "gpt_neox", "num_hidden_layers": 3, "num_attention_heads": 2,
                 "hidden_size": 16, "intermediate_size": 32, "vocab_size": _VOCAB,
                 "max_position_embeddings": 16, "rotary_pct": 0.5},
    "bert": {"model_type": "bert", "num_hidden_layers": 3, "num_attention_heads": 2,
             "hidden_size": 16, "intermediate_size": 32, "vocab_size": _VOCAB,
             "max_position_embeddings": 16},
    "mamba": {"model_type": "mamba", "hidden_size": 16, "state_size": 4, "num_hidden_layers": 3,
              "vocab_size": _VOCAB, "expand": 2},
    "rwkv": {"model_type": "rwkv", "hidden_size": 16, "num_hidden_layers": 3,
             "vocab_size": _VOCAB, "context_length": 16, "rescale_every": 2},
}
_IDS = np.array([[1, 5, 9, 2, 7, 3], [4, 4, 8, 0, 0, 0]], np.int32)
_MASK = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], np.int32)


def _assert_trees_close(test, a, b, atol=1e-5):
  test.assertEqual(jax.tree.structure(a), jax.tree.structure(b))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x, np.float32), np.asarray(y, np.float32), atol=atol,
                               rtol=1e-5)


class StreamingTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    for name, config in CONFIGS.items():
      write_checkpoint(os.path.join(cls.root, name), config, seed=3, shards=2)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  def _pair(self, name):
    path = os.path.join(self.root, name)
    return pretrained.load(path), pretrained.load(path, stream=True)

  @parameterized.named_parameters(*((name, name) for name in CONFIGS))
  def test_streamed_equals_in_memory(self, name):
    model, streamed = self._pair(name)
    self.assertTrue(streamed.streamed)
    self.assertNotIn(loading.LAYERS, streamed.params)
    self.assertEqual(model.num_params, streamed.num_params)
    _assert_trees_close(self, model.forward(_IDS, _MASK), streamed.forward(_IDS, _MASK))
    null, streamed_null = (m.random_init(jax.random.key(7)) for m in (model, streamed))
    self.assertTrue(streamed_null.streamed)
    for index in range(model.config.num_layers):  # the same draw, layer by layer
      _assert_trees_close(self, jax.tree.map(lambda x, i=index: x[i], null.params["layers"]),
                          streamed_null.layer_source(index), atol=0)
    _assert_trees_close(self, null.forward(_IDS, _MASK), streamed_null.forward(_IDS, _MASK))

  def test_layers_match_forward_and_measure_is_unchanged(self):
    model, streamed = self._pair("mamba")
    full = model.forward(_IDS, _MASK)
    outs = list(streamed.layers(_IDS, _MASK))
    self.assertLen(outs, 3)
    for index, out in enumerate(outs):
      np.testing.assert_allclose(out.hidden, full.hidden_states[index + 1], atol=1e-5)
      np.testing.assert_allclose(out.prior.weights, full.priors[index].weights, atol=1e-5)
    batch = probe.Batch(_IDS, _MASK, np.zeros(_IDS.shape, bool))
    a, b = analysis.measure(model, batch), analysis.measure(streamed, batch)
    _assert_trees_close(self, (a.per_head, a.per_layer, a.per_sequence, a.key_norms),
                        (b.per_head, b.per_layer, b.per_sequence, b.key_norms), atol=1e-4)

  def test_each_layer_read_when_the_forward_reaches_it(self):
    _, streamed = self._pair("gpt2")
    reads = []

    def source(index):
      reads.append(index)
      return streamed.layer_source(index)

    counted = streamed.__class__(**{**streamed.__dict__, "layer_source": source})
    for index, _ in enumerate(counted.layers(_IDS, _MASK)):
      self.assertEqual(list(range(index + 1)), reads)
    self.assertEqual([0, 1, 2], reads)

  def test_corrupt_layer_named_when_read(self):
    path = os.path.join(self.root, "corrupt")
    shutil.copytree(os.path.join(self.root, "gpt2"), path)
    shard = next(f for f in sorted(os.listdir(path)) if f.endswith(".safetensors")
                 and "h.2.mlp.c_fc.weight" in load_file(os.path.join(path, f)))
    tensors = load_file(os.path.join(path, shard))
    tensors["h.2.mlp.c_fc.weight"][0, 0] = np.nan
    save_file(tensors, os.path.join(path, shard))
    streamed = pretrained.load(path, stream=True)  # layer 2 is not read yet
    with self.assertRaisesRegex(ValueError, r"'h\.2\.mlp\.c_fc\.weight' holds 1 non-finite"):
      streamed.forward(_IDS, _MASK)
    with self.assertRaisesRegex(ValueError, r"'h\.2\.mlp\.c_fc\.weight'"):
      pretrained.load(path)


if __name__ == "__main__":
  absltest.main()
