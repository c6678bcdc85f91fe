"""CDF models for coder tests: random, extreme and context-dependent distributions."""
from __future__ import annotations

import hashlib

import numpy as np

from neural_compression.coding import cdf_models
from neural_compression import symbols as sym


def extreme_cdf(kind: str, precision_bits: int, rng: np.random.Generator) -> np.ndarray:
  """A CDF of a named adversarial shape (counts sum to 2**P, each >= 1)."""
  total = 1 << precision_bits
  freqs = np.ones(sym.NUM_SYMBOLS, np.int64)
  if kind == "near_certain":  # one symbol takes everything the others leave
    freqs[rng.integers(sym.NUM_SYMBOLS)] += total - sym.NUM_SYMBOLS
  elif kind == "near_certain_lowest":  # the bottom symbol: lo never moves
    freqs[0] += total - sym.NUM_SYMBOLS
  elif kind == "uniform":
    return cdf_models.counts_to_cdf(np.zeros(sym.NUM_SYMBOLS, np.int64), precision_bits)
  elif kind == "powers_of_two":  # dyadic-aligned children everywhere
    freqs[0] = total // 4
    freqs[1] = total // 8
    freqs[2] += total - freqs.sum()
  elif kind == "random":
    counts = rng.integers(0, 1000, sym.NUM_SYMBOLS) * (rng.random(sym.NUM_SYMBOLS) < 0.3)
    return cdf_models.counts_to_cdf(counts, precision_bits)
  else:
    raise ValueError(kind)
  cdf = np.zeros(sym.NUM_SYMBOLS + 1, np.int64)
  cdf[1:] = np.cumsum(freqs)
  return cdf_models.validate_cdf(cdf, precision_bits)


EXTREME_KINDS = ("near_certain", "near_certain_lowest", "uniform", "powers_of_two", "random")


class ContextHashModel(cdf_models.CdfModel):
  """Picks one of a few CDFs by a hash of the whole context: any reset bug changes the CDFs."""

  def __init__(self, cdfs: list[np.ndarray], precision_bits: int):
    self._cdfs = [cdf_models.validate_cdf(c, precision_bits) for c in cdfs]
    self._p = precision_bits

  @property
  def precision_bits(self) -> int:
    return self._p

  def cdf(self, context: np.ndarray) -> np.ndarray:
    digest = hashlib.sha256(np.asarray(context, np.uint16).tobytes()).digest()
    return self._cdfs[digest[0] % len(self._cdfs)]


def make_model(seed: int, kinds: tuple[str, ...], precision_bits: int) -> cdf_models.CdfModel:
  rng = np.random.default_rng(seed)
  return ContextHashModel([extreme_cdf(k, precision_bits, rng) for k in kinds], precision_bits)
