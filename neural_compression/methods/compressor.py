"""The one small interface every compression method of the paper sits behind.

A `Compressor` maps a symbol sequence (bytes + EOS, see `symbols`) to a sequence of integer token
ids and back. Contract:

  * `decode(encode(x).tokens)` returns exactly `x` for every valid symbol sequence `x`, from the
    tokens alone: no lengths or other side channel travel with them.
  * `encode` is deterministic: a pure function of the method's configuration (and model artifact).
  * token ids lie in [0, vocab_size).

Methods differ only in what is behind these two calls: arithmetic coding with M1 or a static
unigram model (optionally in equal-info windows), zlib, raw bytes, SentencePiece.
"""
from __future__ import annotations

import abc
import dataclasses
import math

import numpy as np

from neural_compression.coding.bit_tokens import TOKEN_DTYPE  # noqa: F401  (the interface's dtype)


@dataclasses.dataclass(frozen=True)
class Encoded:
  """The result of compressing one symbol sequence.

  Attributes:
    tokens: token ids, shape [num_tokens], TOKEN_DTYPE, each in [0, vocab_size).
    num_bits: bits of payload before any padding of the final token (for bitstream methods: the
      bitstream length in bits; otherwise num_tokens * log2(vocab_size)).
    num_windows: equal-info windows in the bitstream (1 for unwindowed methods, 0 if empty).
    symbols_at_token: shape [num_tokens + 1]; entry t is how many leading source symbols the
      first t tokens determine on their own (decodable from them). Trimming an M2 example to t
      tokens covers exactly that many source bytes, which is what bits/byte divides by.
  """
  tokens: np.ndarray
  num_bits: float
  num_windows: int
  symbols_at_token: np.ndarray | None = None


class Compressor(abc.ABC):
  """Lossless symbols <-> tokens codec. Subclasses state their token layout in the docstring."""

  @property
  @abc.abstractmethod
  def name(self) -> str:
    """A stable identifier such as 'equal_info_ac:b16:v65k' (the pipeline's --methods syntax)."""

  @property
  @abc.abstractmethod
  def vocab_size(self) -> int:
    """Number of distinct token ids (2**N for N-bit bitstream tokens)."""

  @property
  def bits_per_token(self) -> float:
    """Information capacity of one token in bits: log2(vocab_size)."""
    return math.log2(self.vocab_size)

  @abc.abstractmethod
  def encode(self, symbols: np.ndarray) -> Encoded:
    """Compresses a 1-D symbol sequence (values in [0, NUM_SYMBOLS)) into tokens."""

  @abc.abstractmethod
  def decode(self, tokens: np.ndarray) -> np.ndarray:
    """Returns the exact symbol sequence whose encoding is `tokens` (SYMBOL_DTYPE)."""

  def decode_prefix(self, tokens: np.ndarray) -> np.ndarray:
    """Decodes the leading symbols a prefix of an encoding determines (a trimmed M2 example).

    For the first t tokens of encode(x) this returns x[:encode(x).symbols_at_token[t]].
    Methods whose `decode` already accepts any token prefix inherit this default.
    """
    return self.decode(tokens)

  def encode_batch(self, batch: list[np.ndarray]) -> list[Encoded]:
    """Encodes many sequences; model-driven methods override this to batch their model calls.

    Must return exactly [self.encode(x) for x in batch], whatever the batch's size or order.
    """
    return [self.encode(x) for x in batch]
