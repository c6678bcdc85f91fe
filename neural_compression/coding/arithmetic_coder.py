"""An exact arithmetic coder over integer CDFs, with bit-granular codes.

The coder keeps the current interval exactly, as integers: [lo, lo + width) / 2**scale, with `lo`
an unbounded Python int. Narrowing by a symbol s with integer CDF c (summing to 2**P) is

    r = width >> P;   lo += r * c[s];   width = r * (c[s+1] - c[s])

followed by renormalization (doubling lo and width, scale += 1) until width has exactly
R + 1 bits, R = P + RENORM_HEADROOM_BITS. Invariants, which the tests check:

  * Children partition the parent up to a *remainder* [lo + r * 2**P, lo + width) of fewer than
    2**P units, i.e. less than 2**-RENORM_HEADROOM_BITS of the interval: coding a symbol costs at
    most -log2(p) + 2**-16 / ln 2 bits beyond its quantized probability p = (c[s+1] - c[s]) / 2**P.
  * Nested: every child lies inside its parent, so a code inside the final interval lies inside the
    interval of every prefix, and the decoder retraces the encoder's exact integers.
  * Every symbol shrinks the interval by at least the factor (2**P - 256) / 2**P (the other 256
    symbols hold at least one count each), so a code of n bits determines at most
    n / -log2(1 - 256 / 2**P) + 1 symbols: decoding always terminates.

A *code* of n bits is an integer d in [0, 2**n); it names the dyadic *block*
[d / 2**n, (d + 1) / 2**n). A block lies in an interval, or in a child, or in no child. The minimal
code of an interval is its lowest block of the smallest n that fits one, at most
-log2(width / 2**scale) + 2 bits.

The functions here are pure and work on `Interval` tuples so that callers (the window encoder, the
batched M1 engine) can keep many intervals alive and back off to earlier ones at no cost.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np

RENORM_HEADROOM_BITS = 16


class Interval(NamedTuple):
  """The interval [lo, lo + width) / 2**scale; width has R + 1 bits after renormalization."""
  lo: int
  width: int
  scale: int


def initial_interval(precision_bits: int) -> Interval:
  """Returns [0, 1) at scale R = P + RENORM_HEADROOM_BITS (the state after every reset)."""
  r = precision_bits + RENORM_HEADROOM_BITS
  return Interval(0, 1 << r, r)


def narrow(interval: Interval, cdf: Sequence[int], symbol: int, precision_bits: int) -> Interval:
  """Returns the child interval of `symbol` under `cdf` (integer CDF summing to 2**P), renormalized.

  `cdf` may be a numpy array: its entries are converted to Python ints before they meet the
  unbounded `lo`.
  """
  lo, width, scale = interval
  r = width >> precision_bits
  low_count = int(cdf[symbol])
  lo += r * low_count
  width = r * (int(cdf[symbol + 1]) - low_count)
  shift = precision_bits + RENORM_HEADROOM_BITS + 1 - width.bit_length()
  if shift > 0:
    lo <<= shift
    width <<= shift
    scale += shift
  return Interval(lo, width, scale)


def lowest_block(interval: Interval, num_bits: int) -> int | None:
  """Returns the lowest n-bit code whose block lies inside `interval`, or None if none fits."""
  lo, width, scale = interval
  if scale >= num_bits:
    shift = scale - num_bits
    d = -((-lo) >> shift)  # ceil(lo / 2**shift)
    return d if (d + 1) << shift <= lo + width else None
  return lo << (num_bits - scale)  # blocks finer than one unit: the one starting at lo fits


def minimal_code_length(interval: Interval) -> int:
  """Returns the fewest bits n such that some n-bit block lies inside `interval` (in bits)."""
  # A block of size <= width / 2 always fits, so n is n0 or n0 + 1 with 2**(scale-n0) <= width.
  n0 = max(0, interval.scale - (interval.width.bit_length() - 1))
  return n0 if lowest_block(interval, n0) is not None else n0 + 1


def block_inside(interval: Interval, code: int, num_bits: int) -> bool:
  """Whether the block of the n-bit `code` lies inside `interval`."""
  lo, width, scale = interval
  if scale >= num_bits:
    shift = scale - num_bits
    start = code << shift
    return lo <= start and start + (1 << shift) <= lo + width
  unit = code >> (num_bits - scale)  # a sub-unit block sits inside this one unit
  return lo <= unit < lo + width


def block_child(interval: Interval, cdf: Sequence[int], code: int, num_bits: int,
                precision_bits: int) -> int | None:
  """Returns the symbol whose child interval contains the whole block of `code`, or None.

  None means the block straddles a child boundary or reaches into the remainder: the code does
  not determine a next symbol. The block must lie inside `interval` (ValueError otherwise).
  """
  lo, width, scale = interval
  if scale >= num_bits:
    shift = scale - num_bits
    start = (code << shift) - lo
    end = start + (1 << shift)
  else:
    start = (code >> (num_bits - scale)) - lo  # a sub-unit block sits inside one unit
    end = start + 1
  if start < 0 or end > width:
    raise ValueError("the code's block is not inside the interval")
  r = width >> precision_bits
  if start >= r << precision_bits:
    return None
  s = int(np.searchsorted(cdf, start // r, side="right")) - 1
  return s if end <= r * int(cdf[s + 1]) else None


def interval_bits(interval: Interval) -> float:
  """Returns -log2 of the interval's length: the information coded so far, in bits."""
  top = interval.width.bit_length() - 1
  mantissa = interval.width >> max(0, top - 52)  # 53 significant bits are all a float holds
  return interval.scale - math.log2(mantissa) - max(0, top - 52)
