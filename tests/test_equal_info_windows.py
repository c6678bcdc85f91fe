"""Property tests for equal-info windows: lossless, exactly b bits, greedy, within the bit bound."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from neural_compression.coding import arithmetic_coder as ac
from neural_compression.coding import cdf_models
from neural_compression.coding import equal_info_windows as eiw
from neural_compression import symbols as sym
from tests import coding_test_models as tm

WINDOW_BITS = (16, 24, 32, 64, 128)

models = st.builds(
    tm.make_model, seed=st.integers(0, 2**32 - 1),
    kinds=st.lists(st.sampled_from(tm.EXTREME_KINDS), min_size=1, max_size=3).map(tuple),
    precision_bits=st.just(14))
symbol_seqs = st.one_of(
    st.lists(st.integers(0, sym.NUM_SYMBOLS - 1), min_size=1, max_size=120),
    st.lists(st.sampled_from([0, 0, 0, 1, sym.EOS, 255]), min_size=1, max_size=120),
).map(lambda xs: np.asarray(xs, sym.SYMBOL_DTYPE))


def info_bits(model, window_symbols):
  """-sum log2 p of the window's symbols under the model (quantized probabilities), in bits."""
  total = 0.0
  for i, s in enumerate(window_symbols.tolist()):
    cdf = model.cdf(window_symbols[:i])
    total -= math.log2((cdf[s + 1] - cdf[s]) / (1 << model.precision_bits))
  return total


def window_interval(model, window_symbols):
  interval = ac.initial_interval(model.precision_bits)
  for i, s in enumerate(window_symbols.tolist()):
    interval = ac.narrow(interval, model.cdf(window_symbols[:i]), s, model.precision_bits)
  return interval


@settings(max_examples=120, deadline=None)
@given(model=models, x=symbol_seqs, b=st.sampled_from(WINDOW_BITS))
def test_unambiguous_windows_round_trip_and_are_greedy(model, x, b):
  windows = eiw.encode_windows(x, model, b)
  assert all(0 <= w.code < (1 << b) for w in windows), "every window is exactly b bits"
  assert sum(w.num_symbols for w in windows) == len(x)
  np.testing.assert_array_equal(eiw.decode_windows([w.code for w in windows], model, b), x)
  start = 0
  for w in windows:
    part = x[start:start + w.num_symbols]
    # Each window decodes alone, from its own b bits, to exactly its own symbols.
    np.testing.assert_array_equal(eiw.decode_window(w.code, model, b), part)
    assert w.num_symbols >= 1
    assert info_bits(model, part) <= b + len(part) * 2**-16 / math.log(2) + 1e-9
    greedy = w.num_symbols + w.backed_off
    end = start + greedy
    if end < len(x):  # greedy maximality: one more symbol would not have fit in b bits
      longer = window_interval(model, x[start:end + 1])
      assert ac.lowest_block(longer, b) is None
      assert ac.interval_bits(longer) > b - 1
    start += w.num_symbols


@settings(max_examples=60, deadline=None)
@given(model=models, x=symbol_seqs, b=st.sampled_from(WINDOW_BITS))
def test_paper_rule_is_greedy_without_backoff_and_pads_with_zeros(model, x, b):
  windows = eiw.encode_windows(x, model, b, eiw.ClosingRule.PAPER)
  assert all(w.backed_off == 0 for w in windows)
  start = 0
  for w in windows:
    interval = window_interval(model, x[start:start + w.num_symbols])
    n = ac.minimal_code_length(interval)
    assert n <= b and w.code == ac.lowest_block(interval, n) << (b - n)
    if start + w.num_symbols < len(x):
      assert ac.lowest_block(window_interval(model, x[start:start + w.num_symbols + 1]), b) is None
    start += w.num_symbols


def test_backoff_path_is_exercised_and_still_lossless():
  # A model where the lowest symbol is near certain keeps lo fixed: the lowest block of the
  # greedy interval collides with an earlier prefix's, which forces the fallback.
  rng = np.random.default_rng(0)
  model = cdf_models.FixedCdfModel(tm.extreme_cdf("near_certain_lowest", 14, rng), 14)
  x = np.zeros(700, sym.SYMBOL_DTYPE)
  backoffs = 0
  for b in WINDOW_BITS:
    windows = eiw.encode_windows(x, model, b)
    backoffs += sum(w.backed_off > 0 for w in windows)
    np.testing.assert_array_equal(eiw.decode_windows([w.code for w in windows], model, b), x)
  assert backoffs > 0, "the fallback was never taken: this input no longer exercises it"


def test_window_bits_below_precision_is_refused():
  with pytest.raises(ValueError, match="precision_bits"):
    eiw.encode_windows(np.zeros(3, sym.SYMBOL_DTYPE), cdf_models.FixedCdfModel(None, 14), 13)


@settings(max_examples=200, deadline=None)
@given(code=st.integers(0, 2**16 - 1), seed=st.integers(0, 2**32 - 1))
def test_any_code_decodes_to_at_least_one_symbol(code, seed):
  model = tm.make_model(seed, tm.EXTREME_KINDS, 14)
  decoded = eiw.decode_window(code, model, 16)
  assert 1 <= len(decoded) <= eiw.max_symbols_per_window(16, 14)
  # A decoded window re-encodes to the same code when it is the whole input.
  windows = eiw.encode_windows(decoded, model, 16)
  if len(windows) == 1:
    assert windows[0].num_symbols == len(decoded)
