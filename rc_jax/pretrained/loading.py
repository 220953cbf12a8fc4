"""Reading a local Hugging Face checkpoint directory: config, safetensors weights, tokenizer.

A checkpoint directory holds `config.json`, the weights as `model.safetensors` (or as shards listed
in `model.safetensors.index.json`, any `*.safetensors.index.json`) and optionally `tokenizer.json`.

Parameters are described by `TensorSpec`s (one per Hugging Face tensor name, `{i}` standing for the
layer index) and gathered into a pytree of plain dicts:

    {name: array, ..., "layers": {name: array [n_layers, ...], ...}}

Linear weights are stored as `[in, out]` kernels (PyTorch `nn.Linear` keeps `[out, in]`; GPT-2's
Conv1D already keeps `[in, out]`). An `optional` tensor (an LM head a base-model checkpoint lacks)
is left out of the pytree when the checkpoint does not hold it. Every problem is reported as
FileNotFoundError or ValueError naming the directory, file or tensor; that includes weights that
cannot be a trained model's (a corrupt file): any non-finite value, or a magnitude above
`MAX_ABS_WEIGHT`.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from typing import Any, Callable, Iterable, Union

import jax
import jax.numpy as jnp
import numpy as np
import safetensors

from rc_jax.pretrained import layers

CONFIG_FILE = "config.json"
# Trained transformer weights stay within a few tens (all-MiniLM-L6-v2: 7.9); bytes overwritten by
# garbage decode to NaN or to magnitudes up to 3e38. 1e4 leaves a factor > 1000 of headroom.
MAX_ABS_WEIGHT = 1e4
TOKENIZER_FILE = "tokenizer.json"
LAYERS = "layers"


@dataclasses.dataclass(frozen=True)
class TensorSpec:
  """One parameter: its name in the pytree, its Hugging Face name and stored shape.

  Attributes:
    name: key in the params dict (in `params["layers"]` when `per_layer`).
    hf_name: Hugging Face tensor name without the model prefix; `{i}` is the layer index.
    hf_shape: shape as stored in the checkpoint.
    init: random initialisation for the null baseline: "normal" (std = initializer_range),
      "zeros", "ones", or a function `init(key, shape) -> float32 array` for an
      architecture-specific initialisation (a state-space model's decays); `shape` is the pytree
      shape, with the leading `[n_layers]` axis when `per_layer`.
    transpose: stored as `[out, in]` (nn.Linear); the pytree keeps the transpose.
    per_layer: one tensor per layer, stacked on a leading axis in the pytree.
    optional: the checkpoint may lack it (e.g. an untied LM head, absent from a base-model
      checkpoint); then it is not in the pytree.
    prefixed: the name carries the checkpoint's model prefix (False: a top-level tensor such as
      `lm_head.weight`, stored beside `backbone.*`).
    aliases: other names the tensor is stored under in some checkpoints (read when `hf_name` is
      absent), e.g. Mamba's `embedding.weight` beside `embeddings.weight`.
  """

  name: str
  hf_name: str
  hf_shape: tuple[int, ...]
  init: Union[str, Callable[[jax.Array, tuple[int, ...]], jax.Array]] = "normal"
  transpose: bool = False
  per_layer: bool = False
  optional: bool = False
  prefixed: bool = True
  aliases: tuple[str, ...] = ()

  @property
  def shape(self) -> tuple[int, ...]:
    return tuple(reversed(self.hf_shape)) if self.transpose else self.hf_shape


def check_directory(path: str) -> str:
  """Returns `path` if it is a directory, else raises FileNotFoundError naming it."""
  path = os.fspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"checkpoint directory not found: {path}")
  return path


def read_config(path: str) -> dict[str, Any]:
  """Parses `<path>/config.json`; FileNotFoundError / ValueError naming the file."""
  file = os.path.join(check_directory(path), CONFIG_FILE)
  if not os.path.isfile(file):
    raise FileNotFoundError(f"{file} not found: a Hugging Face checkpoint directory needs "
                            f"{CONFIG_FILE}")
  try:
    with open(file, encoding="utf-8") as f:
      config = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{file} is not valid JSON: {e}") from e
  if not isinstance(config, dict):
    raise ValueError(f"{file} must hold a JSON object, got {type(config).__name__}")
  return config


def config_value(config: dict[str, Any], names: Iterable[str], where: str,
                 default: Any = dataclasses.MISSING) -> Any:
  """The first of `names` present in `config` (aliases), else `default`, else a ValueError."""
  names = tuple(names)
  for name in names:
    if config.get(name) is not None:
      return config[name]
  if default is dataclasses.MISSING:
    raise ValueError(f"{where}: missing required field {' / '.join(repr(n) for n in names)}")
  return default


# `ArchitectureConfig` field -> (config.json names, GPT-2's first, then the newer ones; type)
_COMMON_FIELDS = {
    "vocab_size": (("vocab_size",), int),
    "max_positions": (("n_positions", "n_ctx", "max_position_embeddings", "context_length"), int),
    "num_layers": (("n_layer", "num_hidden_layers"), int),
    "intermediate_size": (("n_inner", "intermediate_size"), int),
    "activation": (("activation_function", "hidden_act"), str),
    "layer_norm_eps": (("layer_norm_epsilon", "layer_norm_eps"), float),
    "initializer_range": (("initializer_range",), float),
}


def common_fields(hf: dict[str, Any], where: str, **defaults: Any) -> dict[str, Any]:
  """The `ArchitectureConfig` fields but the width and heads, read from `config.json` under any of
  their names; `defaults` are each architecture's (a field without one is required). The
  activation name is checked (`layers.check_activation`)."""
  out = {}
  for field, (names, kind) in _COMMON_FIELDS.items():
    out[field] = kind(config_value(hf, names, where, defaults.get(field, dataclasses.MISSING)))
  out["activation"] = layers.check_activation(out["activation"], where)
  return out


def per_layer_specs(template: str) -> Callable[..., "TensorSpec"]:
  """`layer(name, hf_suffix, shape, init="normal", transpose=False, **fields)`: the per-layer
  `TensorSpec` of Hugging Face name `template + hf_suffix`, `template` holding `{i}` for the layer
  (`"h.{i}."`, `"layers.{i}."`)."""
  def layer(name, hf_suffix, shape, init="normal", transpose=False, **fields):
    return TensorSpec(name, template + hf_suffix, shape, init, transpose, per_layer=True, **fields)
  return layer


def norm_specs(make: Callable[..., "TensorSpec"], name: str, hf_module: str,
               width: int) -> list["TensorSpec"]:
  """A layer norm's scale (init ones) and bias (zeros), `{hf_module}.weight` / `.bias`; `make` is
  `TensorSpec` or a `per_layer_specs` factory."""
  return [make(f"{name}_scale", f"{hf_module}.weight", (width,), "ones"),
          make(f"{name}_bias", f"{hf_module}.bias", (width,), "zeros")]


def dense_specs(make: Callable[..., "TensorSpec"], name: str, hf_module: str,
                stored_shape: tuple[int, int], *, transpose: bool = False,
                bias: bool = True) -> list["TensorSpec"]:
  """A dense layer's kernel as stored (`transpose`: nn.Linear's `[out, in]`) and its bias (zeros,
  the output width), `{hf_module}.weight` / `.bias`."""
  out_width = stored_shape[0] if transpose else stored_shape[1]
  kernel = make(f"{name}_kernel", f"{hf_module}.weight", stored_shape, transpose=transpose)
  return [kernel, make(f"{name}_bias", f"{hf_module}.bias", (out_width,), "zeros")][:2 if bias
                                                                                      else 1]


@dataclasses.dataclass(frozen=True)
class ArchitectureConfig:
  """Fields every architecture's forward needs; each architecture's `Config` adds its own.

  Frozen and hashable: configs are static jit arguments.
  """

  vocab_size: int
  max_positions: int
  hidden_size: int
  num_layers: int
  num_heads: int
  intermediate_size: int
  activation: str
  layer_norm_eps: float
  initializer_range: float


def width_and_heads(config: dict[str, Any], where: str) -> tuple[int, int]:
  """`(hidden_size, num_heads)` under either naming (GPT-2's `n_embd`/`n_head` or the newer one),
  checked to split into equal heads."""
  hidden = int(config_value(config, ("n_embd", "hidden_size"), where))
  heads = int(config_value(config, ("n_head", "num_attention_heads"), where))
  if hidden % heads:
    raise ValueError(f"{where}: hidden size {hidden} is not divisible by the {heads} heads")
  return hidden, heads


def weight_files(path: str) -> list[str]:
  """The safetensors files of a checkpoint, from its index when sharded."""
  indexes = sorted(glob.glob(os.path.join(path, "*.safetensors.index.json")))
  if indexes:
    index = indexes[0]
    try:
      with open(index, encoding="utf-8") as f:
        weight_map = json.load(f)["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as e:
      raise ValueError(f"{index} is not a valid safetensors index (needs a 'weight_map'): "
                       f"{e!r}") from e
    files = [os.path.join(path, name) for name in sorted(set(weight_map.values()))]
    for file in files:
      if not os.path.isfile(file):
        raise FileNotFoundError(f"{file} not found: listed in {index}")
    return files
  files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
  if not files:
    raise FileNotFoundError(f"no *.safetensors weights in {path} (PyTorch .bin checkpoints are not "
                            "read; save with safe_serialization=True)")
  return files


class CheckpointReader:
  """Tensor names, stored shapes and values across the safetensors files of one checkpoint."""

  def __init__(self, path: str):
    self.path = check_directory(path)
    self._file_of: dict[str, str] = {}
    self._shape_of: dict[str, tuple[int, ...]] = {}
    for file in weight_files(self.path):
      with self._open(file) as f:
        for name in f.keys():
          self._file_of[name] = file
          self._shape_of[name] = tuple(f.get_slice(name).get_shape())

  @staticmethod
  def _open(file: str):
    try:
      return safetensors.safe_open(file, framework="np")
    except Exception as e:  # safetensors raises its own SafetensorError (an Exception subclass).
      raise ValueError(f"{file} is not a readable safetensors file (truncated or corrupt?): "
                       f"{e}") from e

  def __contains__(self, name: str) -> bool:
    return name in self._file_of

  def shape(self, name: str) -> tuple[int, ...]:
    return self._shape_of[name]

  def read(self, names: Iterable[str]) -> dict[str, np.ndarray]:
    """Reads `names` (grouped by file) as host NumPy arrays in their stored dtype (bfloat16 via
    ml_dtypes); `read_params` checks them there and moves them to the device once, cast."""
    by_file: dict[str, list[str]] = {}
    for name in names:
      by_file.setdefault(self._file_of[name], []).append(name)
    out = {}
    for file, file_names in by_file.items():
      with self._open(file) as f:
        for name in file_names:
          try:
            out[name] = f.get_tensor(name)
          except Exception as e:  # SafetensorError, or an unreadable dtype.
            raise ValueError(f"{file}: cannot read tensor {name!r}: {e}") from e
    return out


def find_prefix(reader: CheckpointReader, probe: str, prefixes: Iterable[str],
                model_type: str) -> str:
  """The name prefix (e.g. "transformer.") under which `probe` is stored."""
  prefixes = tuple(prefixes)
  for prefix in prefixes:
    if prefix + probe in reader:
      return prefix
  tried = ", ".join(repr(p + probe) for p in prefixes)
  raise ValueError(f"{reader.path}: no tensor {tried} in the safetensors weights; "
                   f"is this a {model_type} checkpoint?")


def _hf_names(spec: TensorSpec, prefix: str, n_layers: int) -> list[str]:
  prefix = prefix if spec.prefixed else ""
  if spec.per_layer:
    return [prefix + spec.hf_name.format(i=i) for i in range(n_layers)]
  return [prefix + spec.hf_name]


def _resolve_alias(spec: TensorSpec, reader: CheckpointReader, prefix: str,
                   n_layers: int) -> TensorSpec:
  """`spec` under the first of its names (`hf_name`, then `aliases`) the checkpoint holds."""
  for hf_name in (spec.hf_name,) + spec.aliases:
    candidate = dataclasses.replace(spec, hf_name=hf_name)
    if all(name in reader for name in _hf_names(candidate, prefix, n_layers)):
      return candidate
  return spec


def resolve_specs(reader: CheckpointReader, specs: Iterable[TensorSpec], n_layers: int,
                  prefix: str) -> tuple[TensorSpec, ...]:
  """The specs under the names the checkpoint stores them (aliases resolved), without optional
  ones it lacks (all of their names); every tensor's presence and shape checked (metadata only)."""
  specs = tuple(_resolve_alias(spec, reader, prefix, n_layers) for spec in specs)
  specs = tuple(spec for spec in specs
                if not (spec.optional and not any(name in reader for name in
                                                  _hf_names(spec, prefix, n_layers))))
  for spec in specs:
    for name in _hf_names(spec, prefix, n_layers):
      if name not in reader:
        raise ValueError(f"{reader.path}: tensor {name!r} is missing from the safetensors weights")
      if reader.shape(name) != spec.hf_shape:
        raise ValueError(f"{reader.path}: tensor {name!r} has shape {reader.shape(name)}, expected "
                         f"{spec.hf_shape} from {CONFIG_FILE}")
  return specs


def _read_checked(reader: CheckpointReader, names: list[str], spec: TensorSpec,
                  dtype: Any) -> list[jax.Array]:
  tensors = reader.read(names)
  for name in names:
    check_values(reader.path, name, tensors[name])
  return [_cast(tensors.pop(name), spec, dtype) for name in names]


def read_params(reader: CheckpointReader, specs: tuple[TensorSpec, ...], n_layers: int,
                prefix: str, dtype: Any, *, layers_too: bool = True) -> dict[str, Any]:
  """Reads, checks and casts `resolve_specs`'d tensors into the pytree (one tensor name at a time
  across the layers, stacked). `layers_too=False`: only the top-level tensors (for `read_layer`)."""
  params: dict[str, Any] = {LAYERS: {}} if layers_too else {}
  for spec in specs:
    if spec.per_layer and not layers_too:
      continue
    values = _read_checked(reader, _hf_names(spec, prefix, n_layers), spec, dtype)
    if spec.per_layer:
      params[LAYERS][spec.name] = jnp.stack(values)
    else:
      params[spec.name] = values[0]
  return params


def read_layer(reader: CheckpointReader, specs: tuple[TensorSpec, ...], index: int, prefix: str,
               dtype: Any) -> dict[str, jax.Array]:
  """Layer `index`'s tensors of `resolve_specs`'d `specs`, read, checked and cast:
  `read_params(...)["layers"][name][index]` for each per-layer name."""
  prefix_of = lambda spec: prefix if spec.prefixed else ""
  return {spec.name: _read_checked(reader, [prefix_of(spec) + spec.hf_name.format(i=index)], spec,
                                   dtype)[0]
          for spec in specs if spec.per_layer}


def check_values(path: str, name: str, x: np.ndarray | jax.Array) -> None:
  """ValueError naming tensor `name` if it holds a non-finite value or |value| > MAX_ABS_WEIGHT.

  Checked in NumPy on the host, before the tensor goes to the device: as JAX ops, every new tensor
  shape cost a compilation (~30 ms each, most of a small checkpoint's loading time on CPU).
  """
  x = np.asarray(x).astype(np.float32, copy=False)
  n_bad = int(np.sum(~np.isfinite(x)))
  if n_bad:
    raise ValueError(f"{path}: tensor {name!r} holds {n_bad} non-finite value(s) (NaN or inf): "
                     "the checkpoint is corrupt")
  largest = float(np.max(np.abs(x))) if x.size else 0.0
  if largest > MAX_ABS_WEIGHT:
    raise ValueError(f"{path}: tensor {name!r} holds a value of magnitude {largest:.3g}, above "
                     f"{MAX_ABS_WEIGHT:g} (no trained weight is that large): the checkpoint is "
                     "corrupt")


def _cast(x: jax.Array, spec: TensorSpec, dtype: Any) -> jax.Array:
  x = jnp.asarray(x).astype(dtype)
  return x.T if spec.transpose else x


def _init_value(spec: TensorSpec, key: jax.Array, n_layers: int, std: float, dtype: Any,
                index: int | None) -> jax.Array:
  """`spec`'s random value: the whole tensor, or layer `index` of a per-layer one.

  A per-layer "normal" tensor draws layer i from `fold_in(key, i)`, so layer i is the same value
  whether drawn alone (streaming) or with the others; a callable `init` draws the stacked
  `[n_layers, ...]` tensor (small vectors: decays, mixes) and layer `index` is sliced from it."""
  if callable(spec.init):
    shape = ((n_layers,) if spec.per_layer else ()) + spec.shape
    value = jnp.asarray(spec.init(key, shape), jnp.float32)
    if value.shape != shape:
      raise ValueError(f"init of {spec.name!r} returned shape {value.shape}, expected {shape}")
    return (value if index is None else value[index]).astype(dtype)
  if spec.per_layer and index is None:
    return jnp.stack([_init_value(spec, key, n_layers, std, dtype, i) for i in range(n_layers)])
  if spec.init == "normal":
    layer_key = jax.random.fold_in(key, index) if spec.per_layer else key
    return (std * jax.random.normal(layer_key, spec.shape, jnp.float32)).astype(dtype)
  return (jnp.zeros if spec.init == "zeros" else jnp.ones)(spec.shape, dtype)


def _spec_keys(key: jax.Array, specs: tuple[TensorSpec, ...]) -> list[tuple[TensorSpec, jax.Array]]:
  return list(zip(specs, jax.random.split(key, len(specs))))


def init_params(key: jax.Array, specs: Iterable[TensorSpec], n_layers: int, std: float,
                dtype: Any, *, layers_too: bool = True) -> dict[str, Any]:
  """Random parameters with the pytree structure `read_params` builds (the null baseline).

  "normal" tensors are N(0, std^2) (Hugging Face's `initializer_range`), "zeros" biases and
  "ones" norm scales as at initialisation; a callable `init` draws the tensor itself (see
  `TensorSpec`). `layers_too=False`: only the top-level tensors (for `init_layer`).
  """
  params: dict[str, Any] = {LAYERS: {}} if layers_too else {}
  for spec, spec_key in _spec_keys(key, tuple(specs)):
    if spec.per_layer and not layers_too:
      continue
    target = params[LAYERS] if spec.per_layer else params
    target[spec.name] = _init_value(spec, spec_key, n_layers, std, dtype, None)
  return params


def init_layer(key: jax.Array, specs: Iterable[TensorSpec], n_layers: int, index: int,
               std: float, dtype: Any) -> dict[str, jax.Array]:
  """Layer `index` of `init_params(key, specs, ...)["layers"]`, drawn alone."""
  return {spec.name: _init_value(spec, spec_key, n_layers, std, dtype, index)
          for spec, spec_key in _spec_keys(key, tuple(specs)) if spec.per_layer}


def read_tokenizer(path: str):
  """`tokenizers.Tokenizer` from `<path>/tokenizer.json`, or None when the file is absent.

  Saved padding is switched off (`encode` returns only the real tokens; batch them with an
  attention mask); saved truncation is kept.
  """
  file = os.path.join(path, TOKENIZER_FILE)
  if not os.path.isfile(file):
    return None
  import tokenizers  # pylint: disable=g-import-not-at-top  (optional at import time)
  try:
    tokenizer = tokenizers.Tokenizer.from_file(file)
  except Exception as e:  # tokenizers raises plain Exceptions for malformed files.
    raise ValueError(f"{file} is not a readable tokenizer.json: {e}") from e
  tokenizer.no_padding()
  return tokenizer
