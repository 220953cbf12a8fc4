"""Peak host memory of the pretrained experiment on checkpoints the size of Pythia-2.8B, GPT-2 XL.

    python -m benchmarks.pretrained_memory [--models=pythia-2.8b,gpt2-xl]
        [--modes=bfloat16:stream,float32:stream,bfloat16:memory] [--dir=/tmp/rc_jax_ckpts]
        [--out=benchmarks/PRETRAINED_MEMORY.md]

No network: each checkpoint is written here with the real architecture's `config.json` (the values
of the published models), random weights in the published storage dtype (Pythia float16, GPT-2
float32), sharded like Hugging Face's, and a character-level tokenizer; the probe is 16 sequences of
128 tokens. Then `experiments/pretrained.py` runs on it once per mode (`DTYPE:stream` or
`DTYPE:memory`) in a fresh process, and the table gives the process's peak resident memory
(`ru_maxrss` of the child, also when it was killed) and its wall time. The weights are random, so
only memory and time mean anything here. The LM head is not written (the experiment never reads
it): "parameters read" is the published count less the head. Several GiB of disk per model (`--dir`,
kept for reruns; deleted with `--clean`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from safetensors.numpy import save_file
import tokenizers
from tokenizers import Regex, models, pre_tokenizers

from rc_jax import pretrained
from rc_jax.pretrained import probe

# the published config.json fields the loader reads
MODELS = {
    "pythia-2.8b": ({"model_type": "gpt_neox", "hidden_size": 2560, "num_hidden_layers": 32,
                     "num_attention_heads": 32, "intermediate_size": 10240, "vocab_size": 50304,
                     "max_position_embeddings": 2048, "rotary_pct": 0.25,
                     "rotary_emb_base": 10000, "use_parallel_residual": True,
                     "hidden_act": "gelu", "layer_norm_eps": 1e-5}, np.float16),
    "gpt2-xl": ({"model_type": "gpt2", "n_embd": 1600, "n_layer": 48, "n_head": 25,
                 "vocab_size": 50257, "n_positions": 1024, "activation_function": "gelu_new",
                 "layer_norm_epsilon": 1e-5}, np.float32),
}
_LAYERS_PER_SHARD = 8
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_checkpoint(path: str, name: str) -> int:
  """config.json, sharded random weights and a tokenizer for model `name`; returns the number of
  parameters. Writes one shard at a time (a shard's tensors in memory)."""
  config, dtype = MODELS[name]
  arch = pretrained.ARCHITECTURES[config["model_type"]]
  cfg = arch.Config.from_hf(config, name)
  specs = arch.tensor_specs(cfg)
  rng = np.random.default_rng(0)
  groups = [[None]] + [list(range(i, min(i + _LAYERS_PER_SHARD, cfg.num_layers)))
                       for i in range(0, cfg.num_layers, _LAYERS_PER_SHARD)]
  weight_map, n_params = {}, 0
  os.makedirs(path, exist_ok=True)
  for k, group in enumerate(groups):
    file = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
    tensors = {}
    for spec in specs:
      if spec.optional:
        continue
      for layer in group:
        if spec.per_layer == (layer is None):
          continue
        hf_name = spec.hf_name.format(i=layer) if spec.per_layer else spec.hf_name
        value = rng.standard_normal(spec.hf_shape, np.float32)
        value *= cfg.initializer_range
        tensors[hf_name] = value.astype(dtype, copy=False)
        n_params += value.size
    save_file(tensors, os.path.join(path, file))
    weight_map.update({n: file for n in tensors})
    del tensors
  with open(os.path.join(path, "model.safetensors.index.json"), "w", encoding="utf-8") as f:
    json.dump({"metadata": {}, "weight_map": weight_map}, f)
  with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as f:
    json.dump(config, f)
  chars = sorted(set(probe.PROBE_TEXT))
  tok = tokenizers.Tokenizer(models.WordLevel({"[UNK]": 0, **{c: i + 1 for i, c in
                                                             enumerate(chars)}}, unk_token="[UNK]"))
  tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
  tok.save(os.path.join(path, "tokenizer.json"))
  return n_params


def run(path: str, dtype: str, stream: bool, text_file: str) -> tuple[float, float, str]:
  """Runs the experiment in a child process: `(peak RSS GiB, wall s, last output line)`."""
  workdir = tempfile.mkdtemp(prefix="rc_jax_pretrained_memory_")
  command = [sys.executable, os.path.join(_REPO, "experiments", "pretrained.py"),
             f"--checkpoint={path}", f"--workdir={workdir}/out", f"--dtype={dtype}",
             f"--text_file={text_file}", "--max_tokens=128", "--max_sequences=16",
             f"--stream={stream}"]
  start = time.perf_counter()
  child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  output = child.stdout.read()
  _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage (Popen would reap it)
  child.returncode = os.waitstatus_to_exitcode(status)
  wall = time.perf_counter() - start
  shutil.rmtree(workdir, ignore_errors=True)
  last = (output.strip().splitlines() or [""])[-1]
  if child.returncode < 0:  # e.g. SIGKILL from the kernel's out-of-memory killer
    last = f"killed by signal {-child.returncode} (out of memory?)"
  elif child.returncode:
    last = f"failed with status {child.returncode}: {last}"
  return usage.ru_maxrss / 2**20, wall, last


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--models", default="pythia-2.8b,gpt2-xl")
  parser.add_argument("--modes", default="bfloat16:stream,float32:stream,bfloat16:memory")
  parser.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "rc_jax_ckpts"))
  parser.add_argument("--clean", action="store_true", help="delete the checkpoints afterwards")
  parser.add_argument("--out", default="", help="also write the table to this markdown file")
  args = parser.parse_args(argv)
  text_file = os.path.join(args.dir, "probe.txt")
  os.makedirs(args.dir, exist_ok=True)
  with open(text_file, "w", encoding="utf-8") as f:  # 16 paragraphs of >= 128 characters
    f.write("\n\n".join(probe.paragraphs(probe.PROBE_TEXT) * 2))
  lines = ["| model | parameters read | dtype | mode | peak RSS (GiB) | wall (s) | outcome |",
           "|---|---|---|---|---|---|---|"]
  for name in args.models.split(","):
    path = os.path.join(args.dir, name)
    start = time.perf_counter()
    if not os.path.isfile(os.path.join(path, "model.safetensors.index.json")):
      n_params = write_checkpoint(path, name)
      print(f"{name}: wrote {n_params / 1e9:.2f}B parameters in "
            f"{time.perf_counter() - start:.0f} s", flush=True)
    n_params = pretrained.load(path, stream=True).num_params
    for mode in args.modes.split(","):
      dtype, how = mode.split(":")
      peak, wall, last = run(path, dtype, how == "stream", text_file)
      outcome = last if last.startswith(("killed", "failed")) else "ok"
      line = (f"| {name} | {n_params / 1e9:.2f}B | {dtype} | {how} | {peak:.2f} | {wall:.0f} | "
              f"{outcome} |")
      print(line, flush=True)
      lines.append(line)
    if args.clean:
      shutil.rmtree(path, ignore_errors=True)
  table = "\n".join(lines)
  print(table)
  if args.out:
    with open(args.out, "w", encoding="utf-8") as f:
      f.write(table + "\n")


if __name__ == "__main__":
  main()
