"""Probe text and its encoding into padded token batches.

`PROBE_TEXT` is original English prose written for rc_jax (nothing quoted from other texts), in
varied registers (narrative, exposition, instructions, dialogue, lists of numbers) so that heads
with different jobs all have something to do. Paragraphs are separated by blank lines.

`encode` packs each paragraph's sentences greedily into chunks of at most `max_tokens` tokens,
encodes every chunk with the checkpoint's own tokenizer (special tokens such as BERT's [CLS] / [SEP]
included, as its `tokenizer.json` post-processor adds them) and right-pads the batch.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

PROBE_TEXT = """\
The harbour town woke slowly on Tuesdays. Before the sun cleared the hills, the ferry captain \
walked the length of the pier, counting the ropes and tapping each post with the heel of his \
boot, a habit he could no longer explain. By seven the bakery had opened its shutters, and the \
smell of rye bread drifted over the water to the fishing boats, which were already coming back \
with less than they had hoped for.

A cloud is not a solid thing but a crowd of tiny droplets, each far smaller than a grain of \
sand, held aloft by rising air. When warm, moist air climbs, it expands and cools; once it cools \
past its dew point, water vapour condenses on specks of dust or salt. Whether the cloud grows \
into a storm depends on how quickly the air keeps rising and how much moisture it carries with \
it.

To repot a small lemon tree, water it the evening before so that the roots hold together. Choose \
a pot only a few centimetres wider than the old one, with holes in the bottom. Cover the holes \
with a layer of gravel, add fresh soil, and lift the tree by the base of its trunk rather than \
by the branches. Settle it at the same depth as before, press the soil down gently, and water \
until the excess runs out of the bottom.

"Are you sure this is the right road?" asked Mira, holding the map up to the window. "The river \
should be on our left by now." Her brother shrugged and kept driving. "Rivers move," he said. \
"Maps are older than rivers think." She laughed despite herself, folded the map into a square, \
and decided to trust the next signpost instead.

The committee met on the third of March and reviewed four proposals. The first asked for twelve \
new benches in the east park; the second, for repairs to the library roof, estimated at eighteen \
thousand dollars; the third, for a weekly market on the old car park; and the fourth, for longer \
opening hours at the swimming pool during the summer. After two hours of discussion, the \
committee approved the roof repairs and the market, and asked for revised costs on the benches.

In the opening of a chess game, each move is a small promise about the future. A pawn pushed two \
squares claims space in the centre but can never step back to defend the squares it left behind. \
Good players weigh such promises carefully: they develop their knights and bishops early, keep \
their king safe, and avoid moving the same piece twice without a reason.

Numbers have habits too. Count by sevens and the last digits cycle through every value from zero \
to nine before repeating: 7, 14, 21, 28, 35, 42, 49, 56, 63, 70. Count by fives and only two \
last digits ever appear. A child who notices this has discovered, without any formal words, \
something about remainders that mathematicians took centuries to write down clearly.

The old clockmaker kept a notebook of every repair he had ever made. Each entry gave the date, \
the owner's name, the fault, and a short remark, such as "spring tired but honest" or "someone \
has been here before me with a hammer." When his eyesight began to fail, his granddaughter read \
the entries aloud to him in the evenings, and he would correct her whenever she mispronounced a \
part.
"""

_SENTENCE_END = re.compile(r"(?<=[.!?\"])\s+(?=[A-Z\"0-9])")


@dataclasses.dataclass(frozen=True)
class Batch:
  """A padded token batch (right padding).

  Attributes:
    token_ids: int32 `[B, T]` (padding positions hold `pad_id`).
    attention_mask: int32 `[B, T]`, 1 for real tokens.
    special: bool `[B, T]`, True for tokens the tokenizer added (e.g. [CLS], [SEP]).
  """

  token_ids: np.ndarray
  attention_mask: np.ndarray
  special: np.ndarray

  @property
  def num_tokens(self) -> int:
    return int(self.attention_mask.sum())


def paragraphs(text: str) -> list[str]:
  """Non-empty paragraphs (blank-line separated), internal whitespace collapsed."""
  parts = (" ".join(p.split()) for p in re.split(r"\n\s*\n", text))
  return [p for p in parts if p]


def _chunks(tokenizer, paragraph: str, max_tokens: int) -> list[str]:
  """Greedily packs the paragraph's sentences into chunks that encode to <= max_tokens tokens."""
  chunks, current = [], ""
  for sentence in _SENTENCE_END.split(paragraph):
    candidate = f"{current} {sentence}".strip()
    if current and len(tokenizer.encode(candidate).ids) > max_tokens:
      chunks.append(current)
      candidate = sentence
    current = candidate
  return chunks + [current] if current else chunks


def encode(tokenizer, text: str, max_tokens: int, max_sequences: int | None = None,
           pad_id: int = 0) -> Batch:
  """Tokenizes `text` into at most `max_sequences` right-padded sequences of <= `max_tokens`.

  Sentences longer than `max_tokens` are truncated by the tokenizer (special tokens kept).
  """
  if max_tokens < 1:
    raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
  import tokenizers  # pylint: disable=g-import-not-at-top  (optional at import time)
  tok = tokenizers.Tokenizer.from_str(tokenizer.to_str())  # a copy: truncation set below
  tok.no_padding()
  tok.enable_truncation(max_tokens)
  texts = [chunk for p in paragraphs(text) for chunk in _chunks(tok, p, max_tokens)]
  encodings = [e for e in tok.encode_batch(texts[:max_sequences]) if e.ids]
  if not encodings:
    raise ValueError("the probe text encodes to no tokens")
  length = max(len(e.ids) for e in encodings)
  shape = (len(encodings), length)
  token_ids = np.full(shape, pad_id, np.int32)
  mask = np.zeros(shape, np.int32)
  special = np.zeros(shape, bool)
  for row, e in enumerate(encodings):
    n = len(e.ids)
    token_ids[row, :n] = e.ids
    mask[row, :n] = 1
    special[row, :n] = np.asarray(e.special_tokens_mask, bool)
  return Batch(token_ids, mask, special)


def shuffle_tokens(batch: Batch, seed: int) -> Batch:
  """The same batch with each sequence's non-special real tokens permuted (a null baseline).

  Special tokens and padding stay in place, so only the order of the content changes.
  """
  rng = np.random.default_rng(seed)
  token_ids = batch.token_ids.copy()
  for row in range(token_ids.shape[0]):
    movable = np.flatnonzero(batch.attention_mask[row].astype(bool) & ~batch.special[row])
    token_ids[row, movable] = token_ids[row, rng.permutation(movable)]
  return dataclasses.replace(batch, token_ids=token_ids)
