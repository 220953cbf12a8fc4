r"""Routing collapse in pretrained transformers from local Hugging Face checkpoints.

One model:
  python experiments/pretrained.py --checkpoint=/path/to/gpt2 --workdir=runs/gpt2
Several models in one table and figure:
  python experiments/pretrained.py --checkpoints=/ckpt/gpt2,/ckpt/gpt2-medium --workdir=runs/scale
Training revisions of one model (directories named ...step<N>): also the signature against the step
  python experiments/pretrained.py --checkpoints=/ckpt/pythia-160m/step0,/ckpt/pythia-160m/step1000
      --workdir=runs/pythia-160m-training

Each directory needs config.json, *.safetensors and tokenizer.json (model_type gpt2, gpt_neox,
bert, mamba or rwkv). The probe text is rc_jax's built-in prose unless --text_file is given; it is
cut into sequences of at most --max_tokens tokens (at most --max_sequences of them). Every collapse
metric is measured per layer and head for the checkpoint and its null baselines (random init,
shuffled tokens); see rc_jax/pretrained/experiment.py for the files written to --workdir. Outputs
are written to a temporary directory and moved into --workdir only when the run succeeds. Large
checkpoints: --dtype=bfloat16 halves the weights in memory, --stream keeps one layer's weights at a
time (Pythia-2.8B: README, "Pretrained models").

Bad flags or checkpoint directories print one error line and exit with status 2.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from absl import app
from absl import flags

from rc_jax import pretrained
from rc_jax.pretrained import experiment, probe, training
from rc_jax.report import suite

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A local Hugging Face checkpoint directory.")
_CHECKPOINTS = flags.DEFINE_list("checkpoints", None,
                                 "Comma-separated checkpoint directories to compare.")
_TEXT_FILE = flags.DEFINE_string("text_file", None,
                                 "UTF-8 probe text (blank-line separated paragraphs); default: "
                                 "the built-in probe text.")
# BERT spends 2 tokens of each sequence on [CLS] and [SEP]: at least 4 leaves some text to route.
_MAX_TOKENS = flags.DEFINE_integer("max_tokens", 128, "Maximum tokens per probe sequence "
                                   "(capped at the model's positions; at least 4, so that a probe "
                                   "holds text beside the special tokens).", lower_bound=4)
_MAX_SEQUENCES = flags.DEFINE_integer("max_sequences", 16, "Maximum number of probe sequences.",
                                      lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the random-init weights and the token shuffle.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16", "float16"],
                           "Dtype the weights are cast to and the forward computes in.")
_STREAM = flags.DEFINE_bool("stream", False, "Read and run one layer at a time: only the "
                            "embeddings and one layer's weights and routing in host memory (for "
                            "checkpoints of billions of parameters; the numbers are the same).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
_REPORT_CONFIG = flags.DEFINE_string("report_config", None, "The report config whose statistic, "
                                     "margins and thresholds the verdicts use (default: "
                                     "configs/report.py).")

def _fail(message) -> None:
  """Prints one error line (a multi-line message is joined) and exits with status 2."""
  print("error: " + " ".join(str(message).split()), file=sys.stderr)
  sys.exit(2)


def _parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(e)


def _checkpoint_dirs() -> list[str]:
  if (_CHECKPOINT.value is None) == (_CHECKPOINTS.value is None):
    raise ValueError("give exactly one of --checkpoint=DIR or --checkpoints=DIR1,DIR2,...")
  dirs = [_CHECKPOINT.value] if _CHECKPOINT.value is not None else _CHECKPOINTS.value
  dirs = [d for d in dirs if d]
  if not dirs:
    raise ValueError("no checkpoint directory given")
  return dirs


def _probe_text() -> tuple[str, str]:
  """The probe text and a description of where it came from."""
  if _TEXT_FILE.value is None:
    return probe.PROBE_TEXT, "built-in"
  try:
    with open(_TEXT_FILE.value, encoding="utf-8") as f:
      text = f.read()
  except (OSError, UnicodeDecodeError) as e:
    raise ValueError(f"cannot read --text_file {_TEXT_FILE.value}: {e}") from e
  if not probe.paragraphs(text):
    raise ValueError(f"--text_file {_TEXT_FILE.value} contains no text")
  return text, os.path.abspath(_TEXT_FILE.value)


def _check_writable(workdir: str) -> None:
  """ValueError unless `workdir` (or, for a new one, its nearest existing ancestor) is a writable
  directory; leaves nothing behind."""
  existing = workdir
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise ValueError(f"--workdir {workdir} cannot be created: {existing} is not a directory")
  try:  # access() misses read-only file systems for root: create and remove a directory
    if not os.access(existing, os.W_OK | os.X_OK):
      raise PermissionError(13, "read-only")
    os.rmdir(tempfile.mkdtemp(prefix=".rc_jax_probe_", dir=existing))
  except OSError as e:
    raise ValueError(f"--workdir {workdir} is not writable ({existing}: {e.strerror})") from e


def _commit(tmp_dir: str, workdir: str) -> None:
  """Moves the finished outputs into `workdir` (a rename when it does not exist yet)."""
  if not os.path.exists(workdir):
    os.rename(tmp_dir, workdir)
    return
  for entry in os.listdir(tmp_dir):
    target = os.path.join(workdir, entry)
    if os.path.isdir(target) and not os.path.islink(target):
      shutil.rmtree(target)
    os.replace(os.path.join(tmp_dir, entry), target)
  os.rmdir(tmp_dir)


def main(argv) -> None:
  if len(argv) > 1:
    _fail(f"unexpected arguments: {' '.join(argv[1:])}")
  if not _WORKDIR.value:
    _fail("--workdir is required")
  workdir = os.path.abspath(_WORKDIR.value)
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    _fail(f"--workdir {workdir} exists and is not a directory")
  try:
    _check_writable(workdir)
    dirs = _checkpoint_dirs()
    for path in dirs:
      experiment.check_checkpoint(path)
    text, source = _probe_text()
    report_cfg = suite.load_report_config(_REPORT_CONFIG.value)
  except (ValueError, FileNotFoundError) as e:
    _fail(e)
  parent = os.path.dirname(workdir)
  try:
    os.makedirs(parent, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=f".{os.path.basename(workdir)}.tmp-", dir=parent)
  except OSError as e:
    _fail(f"cannot write into {parent}: {e.strerror}")
  try:
    results = []
    for path, name in zip(dirs, experiment.unique_names(dirs)):
      print(f"measuring {name} ({path})", flush=True)
      try:
        model = pretrained.load(path, dtype=_DTYPE.value, stream=_STREAM.value)
      except (ValueError, FileNotFoundError) as e:
        _fail(e)
      results.append(experiment.measure_model(
          model, text, max_tokens=_MAX_TOKENS.value, max_sequences=_MAX_SEQUENCES.value,
          seed=_SEED.value, name=name))
      del model
    probe_info = {"source": source, "max_tokens": _MAX_TOKENS.value,
                  "max_sequences": _MAX_SEQUENCES.value, "seed": _SEED.value,
                  "dtype": _DTYPE.value, "stream": _STREAM.value}
    steps = training.revision_steps(dirs)
    if steps:
      print(f"training revisions at steps {sorted(steps)}: writing the signature over training")
    experiment.write_outputs(results, tmp_dir, probe_info, report_cfg, steps)
    _commit(tmp_dir, workdir)
  finally:
    shutil.rmtree(tmp_dir, ignore_errors=True)
  print(f"wrote {workdir}")


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
