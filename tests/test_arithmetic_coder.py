"""Invariants of the exact arithmetic coder (arithmetic_coder module docstring)."""
from fractions import Fraction

import numpy as np
from hypothesis import given, settings, strategies as st

from neural_compression.coding import arithmetic_coder as ac
from neural_compression.coding import cdf_models
from neural_compression import symbols as sym
from tests import coding_test_models as tm


def as_fractions(interval):
  lo, width, scale = interval
  return Fraction(lo, 1 << scale), Fraction(lo + width, 1 << scale)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), precision=st.sampled_from([9, 12, 14, 16]),
       length=st.integers(1, 40), kind=st.sampled_from(tm.EXTREME_KINDS))
def test_children_nest_partition_and_cost_what_they_should(seed, precision, length, kind):
  rng = np.random.default_rng(seed)
  cdf = tm.extreme_cdf(kind, precision, rng)
  interval = ac.initial_interval(precision)
  info = 0.0
  for s in rng.integers(0, sym.NUM_SYMBOLS, length).tolist():
    parent = as_fractions(interval)
    children = [as_fractions(ac.narrow(interval, cdf, t, precision)) for t in (s, (s + 1) % 257)]
    child = ac.narrow(interval, cdf, s, precision)
    lo, hi = as_fractions(child)
    assert parent[0] <= lo < hi <= parent[1], "child must nest inside its parent"
    assert child.width.bit_length() == precision + ac.RENORM_HEADROOM_BITS + 1
    # Neighbouring children do not overlap.
    a, b = sorted(children)
    assert a[1] <= b[0]
    info += -np.log2((cdf[s + 1] - cdf[s]) / (1 << precision))
    interval = child
  # Truncation loses less than 2**-16 of the interval per symbol.
  assert ac.interval_bits(interval) <= info + length * 2**-16 / np.log(2) + 1e-9


@settings(max_examples=200, deadline=None)
@given(lo=st.integers(0, 2**40), width_bits=st.integers(1, 30), scale=st.integers(0, 70),
       n=st.integers(0, 72))
def test_lowest_block_and_minimal_length_match_brute_force(lo, width_bits, scale, n):
  width = (1 << width_bits) - 1 + (lo % 7 if width_bits > 3 else 0)
  interval = ac.Interval(lo, width, scale)
  lo_f, hi_f = Fraction(lo, 1 << scale), Fraction(lo + width, 1 << scale)
  d = ac.lowest_block(interval, n)
  first = -((-lo_f.numerator * (1 << n)) // lo_f.denominator)  # ceil(lo_f * 2**n)
  expected = first if Fraction(first + 1, 1 << n) <= hi_f else None
  assert d == expected
  m = ac.minimal_code_length(interval)
  assert ac.lowest_block(interval, m) is not None
  assert m == 0 or ac.lowest_block(interval, m - 1) is None


def test_block_child_finds_the_child_of_every_block():
  precision = 12
  cdf = tm.extreme_cdf("random", precision, np.random.default_rng(3))
  interval = ac.narrow(ac.initial_interval(precision), cdf, 101, precision)
  n = ac.minimal_code_length(interval) + 12
  first = ac.lowest_block(interval, n)
  found = 0
  for code in range(first, first + 4000):
    if ac.lowest_block(ac.Interval(*interval), n) is None:
      break
    lo, hi = Fraction(code, 1 << n), Fraction(code + 1, 1 << n)
    i_lo, i_hi = as_fractions(interval)
    if hi > i_hi:
      break
    s = ac.block_child(interval, cdf, code, n, precision)
    if s is not None:
      c_lo, c_hi = as_fractions(ac.narrow(interval, cdf, s, precision))
      assert c_lo <= lo and hi <= c_hi
      found += 1
    else:  # in no child: it must cross a child edge or sit in the remainder
      inside = [t for t in range(sym.NUM_SYMBOLS)
                if as_fractions(ac.narrow(interval, cdf, t, precision))[0] <= lo
                and hi <= as_fractions(ac.narrow(interval, cdf, t, precision))[1]]
      assert not inside
  assert found > 100, f"only {found} blocks checked"


def test_counts_to_cdf_is_valid_and_proportional():
  counts = np.arange(sym.NUM_SYMBOLS, dtype=np.int64) ** 2
  cdf = cdf_models.counts_to_cdf(counts, 14)
  freqs = np.diff(cdf)
  assert freqs.min() >= 1 and cdf[-1] == 1 << 14
  assert np.all(np.diff(freqs) >= 0), "more counts never get fewer units"
  np.testing.assert_array_equal(cdf, cdf_models.counts_to_cdf(counts * 3, 14))
