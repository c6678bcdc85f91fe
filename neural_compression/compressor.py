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

TOKEN_DTYPE = np.int32


@dataclasses.dataclass(frozen=True)
class Encoded:
  """The result of compressing one symbol sequence.

  Attributes:
    tokens: token ids, shape [num_tokens], TOKEN_DTYPE, each in [0, vocab_size).
    num_bits: bits of payload before any padding of the final token (for bitstream methods: the
      bitstream length in bits; otherwise num_tokens * log2(vocab_size)).
    num_windows: equal-info windows in the bitstream (1 for unwindowed methods, 0 if empty).
  """
  tokens: np.ndarray
  num_bits: float
  num_windows: int


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
