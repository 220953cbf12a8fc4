"""Pretrained transformers from local Hugging Face checkpoints, as pure-JAX forwards with routing.

    model = pretrained.load("/path/to/gpt2")    # config.json + *.safetensors [+ tokenizer.json]
    out = model.forward(token_ids, attention_mask)    # [B, T] ints, [B, T] 1 = real token
    out.routings[l]        Routing: weights [B, H, T, T], mask [B, 1, T, T], key_norms [B, H, T]
    out.hidden_states[l]   [B, T, D], embeddings first, Hugging Face's order
    out.priors[l]          the layer's positional-prior Routing (Mamba, RWKV; () for attention)
    model.logits(out.hidden_states[-1])               # [B, T, V] (Mamba, RWKV)
    null = model.random_init(jax.random.key(0))       # same architecture, random weights
    for layer in model.layers(token_ids, attention_mask):   # LayerOutput per layer: hidden
      ...                                                   # (hidden_states[l + 1]), routing, prior

`load(path, stream=True)` keeps only the top-level tensors in memory and reads each layer's weights
from the checkpoint when `layers` reaches it (`streaming.py`); its random init draws each layer the
same way, and equals the in-memory model's `random_init` with the same key. Streaming is what lets a
2.8B-parameter checkpoint be probed within a few GiB of host memory (README, "Pretrained models").

Supported `model_type`s: "gpt2", "gpt_neox" (Pythia), "bert", "mamba" (the SSM's implicit
hidden-attention kernel per channel group, `mamba.py`) and "rwkv" (RWKV-4's WKV kernel per channel
group, `rwkv.py`). Weights may be float32, float16 or bfloat16 and sharded
(`*.safetensors.index.json`); they are cast to `dtype` (float32 by default), the dtype the forward
computes in (softmax, layer norms and the recurrences always in float32). Positions are `0..T-1`
for every sequence, as Hugging Face uses when no position ids are passed.

May import: `rc_jax.routers` (each layer's `Routing`), `rc_jax.measurement` (metrics, the verdicts'
statistics), JAX, safetensors, tokenizers, matplotlib; never the engine (it trains nothing).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from rc_jax.pretrained import bert, gpt2, gpt_neox, layers, loading, mamba, rwkv, streaming
from rc_jax.pretrained.layers import ForwardOutput, LayerOutput

ARCHITECTURES = {module.MODEL_TYPE: module for module in (gpt2, gpt_neox, bert, mamba, rwkv)}
_ARCHITECTURE_OF = {module.Config: module for module in ARCHITECTURES.values()}
_LOGITS = {module.Config: module.logits for module in ARCHITECTURES.values()
           if hasattr(module, "logits")}

__all__ = ["ARCHITECTURES", "ForwardOutput", "LayerOutput", "PretrainedModel", "default_name",
           "load"]


@functools.partial(jax.jit, static_argnames=("cfg",))
def _apply(params, token_ids, token_mask, cfg) -> ForwardOutput:
  return layers.scan_forward(_ARCHITECTURE_OF[type(cfg)], params, token_ids, token_mask, cfg)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _logits(params, hidden, cfg) -> jax.Array:
  return _LOGITS[type(cfg)](params, hidden, cfg)


@dataclasses.dataclass(frozen=True)
class PretrainedModel:
  """A loaded checkpoint: architecture config, params pytree, tokenizer (None without one).

  Attributes:
    name: a label (`default_name` of the directory; suffixed for the random-init baseline).
    model_type: the Hugging Face `model_type`.
    config: the architecture's frozen `Config` (hashable; `num_layers`, `num_heads`, ...).
    params: plain dicts of arrays, per-layer tensors stacked on a leading `[num_layers]` axis
      under "layers" (a streamed model holds only the top-level tensors).
    tokenizer: a `tokenizers.Tokenizer` from `tokenizer.json`, or None.
    path: the checkpoint directory (None for models not read from disk).
    specs: the `loading.TensorSpec`s of the tensors the model holds (set by `load`).
    layer_source: for a streamed model, `i -> layer i's tensors` (read from the checkpoint or
      drawn), called each time a forward reaches layer i; None when every layer is in `params`.
  """

  name: str
  model_type: str
  config: Any
  params: Any
  tokenizer: Any = None
  path: str | None = None
  specs: tuple[loading.TensorSpec, ...] = ()
  layer_source: Callable[[int], dict[str, jax.Array]] | None = None

  @property
  def streamed(self) -> bool:
    return self.layer_source is not None

  @property
  def num_params(self) -> int:
    if not self.specs:
      return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(self.params))
    return sum(int(np.prod(spec.shape)) * (self.config.num_layers if spec.per_layer else 1)
               for spec in self.specs)

  def _checked_inputs(self, token_ids, attention_mask) -> tuple[jax.Array, jax.Array]:
    token_ids = jnp.asarray(token_ids)
    if token_ids.ndim != 2 or not jnp.issubdtype(token_ids.dtype, jnp.integer):
      raise ValueError(f"token_ids must be an integer array [batch, tokens], got "
                       f"{token_ids.dtype}{list(token_ids.shape)}")
    if token_ids.shape[1] > self.config.max_positions:
      raise ValueError(f"{token_ids.shape[1]} tokens exceed the {self.config.max_positions} "
                       f"positions of {self.name}")
    if not isinstance(token_ids, jax.core.Tracer):
      low, high = int(jnp.min(token_ids)), int(jnp.max(token_ids))
      if low < 0 or high >= self.config.vocab_size:
        raise ValueError(f"token ids must lie in [0, {self.config.vocab_size}) for {self.name}, "
                         f"got [{low}, {high}]")
    if attention_mask is None:
      attention_mask = jnp.ones(token_ids.shape, jnp.int32)
    attention_mask = jnp.asarray(attention_mask)
    if attention_mask.shape != token_ids.shape:
      raise ValueError(f"attention_mask shape {list(attention_mask.shape)} != token_ids shape "
                       f"{list(token_ids.shape)}")
    return token_ids, attention_mask.astype(jnp.int32)

  def forward(self, token_ids, attention_mask=None) -> ForwardOutput:
    """Jitted forward of `token_ids [B, T]` with an optional padding mask `[B, T]` (1 = real).

    Padding may be on either side; padding targets and sources are False in every routing mask
    (see `layers.attention` for what their weight rows contain). A streamed model runs layer by
    layer and returns every layer's output (use `layers` to keep one layer at a time).
    """
    token_ids, attention_mask = self._checked_inputs(token_ids, attention_mask)
    if not self.streamed:
      return _apply(self.params, token_ids, attention_mask, cfg=self.config)
    arch = ARCHITECTURES[self.model_type]
    _, embeddings = streaming.embed(arch, self.params, token_ids, attention_mask, self.config)
    outs = list(streaming.run_layers(arch, self.params, self.layer_source, token_ids,
                                     attention_mask, self.config))
    priors = tuple(out.prior for out in outs) if outs[0].prior is not None else ()
    return ForwardOutput(routings=tuple(out.routing for out in outs),
                         hidden_states=(embeddings,) + tuple(out.hidden for out in outs),
                         priors=priors)

  def layers(self, token_ids, attention_mask=None) -> Iterator[LayerOutput]:
    """Each layer's `LayerOutput` in turn (`hidden` is `forward(...).hidden_states[l + 1]`); a
    streamed model holds one layer's weights and routing at a time."""
    token_ids, attention_mask = self._checked_inputs(token_ids, attention_mask)
    if self.streamed:
      yield from streaming.run_layers(ARCHITECTURES[self.model_type], self.params,
                                      self.layer_source, token_ids, attention_mask, self.config)
      return
    out = _apply(self.params, token_ids, attention_mask, cfg=self.config)
    for index, routing in enumerate(out.routings):
      yield LayerOutput(hidden=out.hidden_states[index + 1], routing=routing,
                        prior=out.priors[index] if out.priors else None)

  def logits(self, final_hidden) -> jax.Array:
    """Language-model logits `[B, T, V]` (float32) of `forward(...).hidden_states[-1]`.

    Raises:
      ValueError: the architecture has no LM head here (only "mamba" and "rwkv" do), or the
        checkpoint was saved without its (untied) head.
    """
    if type(self.config) not in _LOGITS:
      available = sorted(m.MODEL_TYPE for m in ARCHITECTURES.values() if hasattr(m, "logits"))
      raise ValueError(f"logits are not available for model_type {self.model_type!r} "
                       f"(available: {', '.join(available)})")
    return _logits(self.params, jnp.asarray(final_hidden), cfg=self.config)

  def random_init(self, key: jax.Array) -> "PretrainedModel":
    """The same architecture with random weights (the matched null baseline); streamed if this
    model is, with the same values either way.

    Matrices and embeddings ~ N(0, initializer_range^2), biases 0, norm scales 1 (Hugging Face's
    initialisation without its per-architecture rescalings); the state-space models' decays and
    mixes as their architectures initialise them (see each module's `tensor_specs`). An optional
    tensor (an LM head) is drawn only if the checkpoint has it.
    """
    dtype = jax.tree.leaves(self.params)[0].dtype
    arch = ARCHITECTURES[self.model_type]
    held = ({spec.name for spec in self.specs} if self.specs else
            set(self.params) | set(self.params.get(loading.LAYERS, {})))
    specs = tuple(spec for spec in arch.tensor_specs(self.config)
                  if not spec.optional or spec.name in held)
    n_layers, std = self.config.num_layers, self.config.initializer_range
    params = loading.init_params(key, specs, n_layers, std, dtype, layers_too=not self.streamed)
    source = (functools.partial(loading.init_layer, key, specs, n_layers, std=std, dtype=dtype)
              if self.streamed else None)
    return dataclasses.replace(self, name=f"{self.name} (random init)", params=params,
                               specs=specs, layer_source=source)


_GENERIC_DIR_NAMES = ("model", "checkpoint", "weights")


def default_name(path: str) -> str:
  """A readable model name for a checkpoint directory.

  The base name, except: a Hugging Face cache snapshot (`models--org--name/snapshots/<hash>`)
  gives `name`, and a generic base name (`model`, `checkpoint`, `weights`) gives its parent's name.
  """
  path = os.path.abspath(path)
  base, parent = os.path.basename(path), os.path.dirname(path)
  if os.path.basename(parent) == "snapshots":
    return os.path.basename(os.path.dirname(parent)).split("--")[-1]
  if base in _GENERIC_DIR_NAMES and os.path.basename(parent):
    return os.path.basename(parent)
  return base


def load(path: str, dtype: Any = jnp.float32, stream: bool = False) -> PretrainedModel:
  """Loads a local Hugging Face checkpoint directory (no network).

  Args:
    path: a directory with `config.json`, `*.safetensors` (or a sharded index) and optionally
      `tokenizer.json`.
    dtype: floating dtype the weights are cast to and the forward computes in.
    stream: read only the top-level tensors now and each layer's when a forward reaches it
      (`streaming.py`); every tensor's presence and shape are still checked here.

  Raises:
    FileNotFoundError: the directory, `config.json` or a weight file is missing.
    ValueError: unknown `model_type`, an unreadable (e.g. truncated) file, or a missing tensor or
      one whose shape disagrees with `config.json`; the message names it. (Streamed, a layer's
      corrupt values are found when that layer is read.)
  """
  if not jnp.issubdtype(jnp.dtype(dtype), jnp.floating):
    raise ValueError(f"dtype must be a floating dtype, got {dtype}")
  path = os.path.abspath(loading.check_directory(path))
  hf_config = loading.read_config(path)
  where = os.path.join(path, loading.CONFIG_FILE)
  model_type = hf_config.get("model_type")
  if model_type not in ARCHITECTURES:
    raise ValueError(f"{where}: model_type {model_type!r} is not supported "
                     f"(supported: {', '.join(sorted(ARCHITECTURES))})")
  arch = ARCHITECTURES[model_type]
  config = arch.Config.from_hf(hf_config, where)
  reader = loading.CheckpointReader(path)
  prefix = loading.find_prefix(reader, arch.PROBE_TENSOR, arch.PREFIXES, model_type)
  specs = loading.resolve_specs(reader, arch.tensor_specs(config), config.num_layers, prefix)
  params = loading.read_params(reader, specs, config.num_layers, prefix, dtype,
                               layers_too=not stream)
  source = (functools.partial(loading.read_layer, reader, specs, prefix=prefix, dtype=dtype)
            if stream else None)
  return PretrainedModel(name=default_name(path), model_type=model_type, config=config,
                         params=params, tokenizer=loading.read_tokenizer(path), path=path,
                         specs=specs, layer_source=source)
