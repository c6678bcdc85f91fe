"""Integer next-symbol CDFs and the models that produce them.

Every model hands the arithmetic coder an integer CDF over the NUM_SYMBOLS symbols:
`cdf` is an int64 array of length NUM_SYMBOLS + 1 with cdf[0] == 0, cdf[-1] == 2**P and
cdf[i+1] - cdf[i] >= 1 for every symbol i. P (precision_bits) is the coder's precision: every
symbol gets probability at least 2**-P, so any symbol costs at most P bits (plus coder overhead),
which is why an equal-info window of b >= P bits always holds at least one symbol.

Models see the *context*: the symbols already coded in the current segment (an equal-info window
resets it to empty). Integer CDFs make the coder's input exact; how a model computes them
deterministically is the model's business (see the exact M1 engine).
"""
from __future__ import annotations

import abc

import numpy as np

from neural_compression import symbols as sym

MIN_PRECISION_BITS = 9  # 2**9 = 512 > 257 symbols, each needing a count of at least 1
MAX_PRECISION_BITS = 24


def check_precision_bits(precision_bits: int) -> int:
  """Returns precision_bits if in [MIN_PRECISION_BITS, MAX_PRECISION_BITS]; raises ValueError."""
  if not MIN_PRECISION_BITS <= precision_bits <= MAX_PRECISION_BITS:
    raise ValueError(f"precision_bits must be in [{MIN_PRECISION_BITS}, {MAX_PRECISION_BITS}] "
                     f"so that all {sym.NUM_SYMBOLS} symbols get a nonzero count, got {precision_bits}")
  return precision_bits


def validate_cdf(cdf: np.ndarray, precision_bits: int) -> np.ndarray:
  """Returns cdf as int64 after checking the contract above; raises ValueError otherwise."""
  cdf = np.asarray(cdf, dtype=np.int64)
  if cdf.shape != (sym.NUM_SYMBOLS + 1,):
    raise ValueError(f"a CDF has {sym.NUM_SYMBOLS + 1} entries, got shape {cdf.shape}")
  if cdf[0] != 0 or cdf[-1] != (1 << precision_bits):
    raise ValueError(f"a CDF runs from 0 to 2**{precision_bits}, got {cdf[0]}..{cdf[-1]}")
  if np.any(np.diff(cdf) < 1):
    raise ValueError("every symbol needs a count of at least 1 (CDF must strictly increase)")
  return cdf


def counts_to_cdf(counts: np.ndarray, precision_bits: int) -> np.ndarray:
  """Quantizes nonnegative integer counts to a valid CDF with integer arithmetic only.

  Every symbol gets 1 + floor(count * spare / total) where spare = 2**P - NUM_SYMBOLS; the few
  units left over by flooring go to the symbols with the largest remainders (ties: lower
  symbol first). Pure integer arithmetic, so the result is identical on every platform.

  Args:
    counts: shape [NUM_SYMBOLS], nonnegative integers (any scale; all-zero gives uniform).
    precision_bits: P; the CDF sums to 2**P.
  Returns:
    int64 CDF of length NUM_SYMBOLS + 1.
  """
  check_precision_bits(precision_bits)
  counts = np.asarray(counts)
  if counts.shape != (sym.NUM_SYMBOLS,) or np.any(counts < 0):
    raise ValueError(f"counts must be {sym.NUM_SYMBOLS} nonnegative integers")
  counts = [int(c) for c in counts]
  total = sum(counts)
  spare = (1 << precision_bits) - sym.NUM_SYMBOLS
  if total == 0:
    counts, total = [1] * sym.NUM_SYMBOLS, sym.NUM_SYMBOLS
  freqs = [1 + c * spare // total for c in counts]
  left = (1 << precision_bits) - sum(freqs)
  by_remainder = sorted(range(sym.NUM_SYMBOLS), key=lambda i: (-(counts[i] * spare % total), i))
  for i in by_remainder[:left]:
    freqs[i] += 1
  cdf = np.zeros(sym.NUM_SYMBOLS + 1, dtype=np.int64)
  cdf[1:] = np.cumsum(freqs)
  return validate_cdf(cdf, precision_bits)


class CdfModel(abc.ABC):
  """A next-symbol model that gives the coder integer CDFs (see module docstring)."""

  @property
  @abc.abstractmethod
  def precision_bits(self) -> int:
    """P: every CDF this model returns sums to 2**P."""

  @abc.abstractmethod
  def cdf(self, context: np.ndarray) -> np.ndarray:
    """Returns the CDF of the next symbol after `context` (symbols of the current segment)."""

  def cdfs(self, contexts: list[np.ndarray]) -> np.ndarray:
    """Batched `cdf`: shape [len(contexts), NUM_SYMBOLS + 1]. Must equal row-wise `cdf` exactly."""
    return np.stack([self.cdf(c) for c in contexts]) if contexts else np.zeros(
        (0, sym.NUM_SYMBOLS + 1), np.int64)


class FixedCdfModel(CdfModel):
  """A context-free model with one fixed CDF (uniform by default)."""

  def __init__(self, cdf: np.ndarray | None, precision_bits: int):
    """cdf: the CDF (None: uniform); precision_bits: P, e.g. methods.PRECISION_BITS."""
    self._precision_bits = check_precision_bits(precision_bits)
    if cdf is None:
      cdf = counts_to_cdf(np.zeros(sym.NUM_SYMBOLS, np.int64), precision_bits)
    self._cdf = validate_cdf(cdf, precision_bits)
    self._cdf.setflags(write=False)

  @property
  def precision_bits(self) -> int:
    return self._precision_bits

  def cdf(self, context: np.ndarray) -> np.ndarray:
    del context  # context-free by definition
    return self._cdf

  def cdfs(self, contexts: list[np.ndarray]) -> np.ndarray:
    return np.broadcast_to(self._cdf, (len(contexts), len(self._cdf)))
