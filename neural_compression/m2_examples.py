"""M2 examples: the token sequences M2 trains on, cut from one compressed example.

`trim` (the paper): keep the first `length` tokens of every compressed example; the tail is
dropped and its bytes are counted as trimmed. `split`: cut the whole token stream into
consecutive pieces of `length` tokens (rounded down to a whole number of `unit` tokens, so a
windowed method's pieces hold whole windows and decode on their own); nothing is dropped.

Each M2 example records `raw_bytes`: the source symbols its tokens account for, taken from
`Encoded.symbols_at_token` (what a prefix of the tokens determines). Summed over a split it is
the denominator of bits/byte.
"""
from __future__ import annotations

import math
import typing

import numpy as np

from neural_compression.methods.compressor import Encoded

MODES = ("trim", "split")


class M2Example(typing.NamedTuple):
  """Tokens for M2 (raw token values) and the source bytes they cover (bytes, tokens); chunk is
  the piece's index in its example. A NamedTuple: made once per M2 record, and a frozen
  dataclass's __init__ cost ~1 us of it."""
  tokens: np.ndarray
  raw_bytes: int
  chunk: int


def token_unit(window_bits: int | None, token_bits: int | None) -> int:
  """Tokens per whole group of windows: lcm(b, N) / N for windowed methods, else 1."""
  if window_bits is None or token_bits is None:
    return 1
  return math.lcm(window_bits, token_bits) // token_bits


def m2_examples(encoded: Encoded, length: int, mode: str = "trim",
                unit: int = 1) -> list[M2Example]:
  """Cuts one encoded example into M2 examples of at most `length` tokens (see module doc)."""
  if mode not in MODES:
    raise ValueError(f"--m2_mode must be one of {MODES}, got {mode!r}")
  if length < unit:
    raise ValueError(f"--m2_length={length} tokens is shorter than one whole window group "
                     f"({unit} tokens)")
  counts = encoded.symbols_at_token
  total = len(encoded.tokens)
  if mode == "trim":
    keep = min(length, total)
    return [M2Example(encoded.tokens[:keep], int(counts[keep]), 0)] if total else []
  step = length // unit * unit
  return [M2Example(encoded.tokens[start:start + step],
                    int(counts[min(start + step, total)] - counts[start]), i)
          for i, start in enumerate(range(0, total, step))]
