"""The compiled coder against the pure-Python reference: identical tokens, decodes and errors.

Random and adversarial CDFs (tests/coding_test_models.py), context-dependent and fixed models
(the two compiled drivers), every window width b from the precision to 4096 and every token width
N, and random bit strings fed to the decoders (including invalid ones, which must fail alike).
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from neural_compression.coding import arithmetic_coder as ac
from neural_compression.methods import arithmetic as acc
from neural_compression.coding import cdf_models
from neural_compression.coding import equal_info_windows as eiw
from neural_compression import symbols as sym
from neural_compression.coding import compiled_coder as cc
from tests import coding_test_models as tm

P = 14
kinds = st.lists(st.sampled_from(tm.EXTREME_KINDS), min_size=1, max_size=3).map(tuple)
symbol_seqs = st.one_of(
    st.lists(st.integers(0, sym.NUM_SYMBOLS - 1), min_size=0, max_size=90),
    st.lists(st.sampled_from([0, 0, 0, 1, sym.EOS, 255]), min_size=0, max_size=90),
).map(lambda xs: np.asarray(xs, sym.SYMBOL_DTYPE))
window_bits = st.one_of(st.sampled_from([14, 15, 16, 17, 32, 64, 128]), st.integers(14, 4096))
rules = st.sampled_from(list(eiw.ClosingRule))


def build_model(seed, model_kinds, fixed):
  """A context-hash model (stepwise driver) or a fixed CDF (static driver)."""
  if fixed:
    return cdf_models.FixedCdfModel(
        tm.extreme_cdf(model_kinds[0], P, np.random.default_rng(seed)), P)
  return tm.make_model(seed, model_kinds, P)


def same_encoded(a, b):
  np.testing.assert_array_equal(a.tokens, b.tokens)
  assert a.tokens.dtype == b.tokens.dtype
  assert (a.num_bits, a.num_windows) == (b.num_bits, b.num_windows)
  np.testing.assert_array_equal(a.symbols_at_token, b.symbols_at_token)


def decode_outcome(decode, tokens):
  try:
    return "ok", decode(tokens).tolist()
  except eiw.DecodeError as e:
    return "error", str(e)


def test_compiled_coder_uses_the_reference_headroom():
  assert cc.RENORM_HEADROOM_BITS == ac.RENORM_HEADROOM_BITS


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), model_kinds=kinds, fixed=st.booleans(),
       batch=st.lists(symbol_seqs, min_size=1, max_size=3), b=window_bits,
       n=st.integers(1, 16), rule=rules)
def test_equal_info_windows_encode_and_decode_like_the_reference(seed, model_kinds, fixed, batch,
                                                                  b, n, rule):
  model = build_model(seed, model_kinds, fixed)
  n = min(n, b)
  compiled = acc.EqualInfoACCompressor(model, b, n, rule)
  reference = acc.EqualInfoACCompressor(model, b, n, rule, coder="reference")
  got = compiled.encode_batch(batch)
  for x, g, r in zip(batch, got, reference.encode_batch(batch)):
    same_encoded(g, r)
    assert decode_outcome(compiled.decode, g.tokens) == decode_outcome(reference.decode, r.tokens)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), model_kinds=kinds, fixed=st.booleans(),
       b=window_bits, rule=rules, density=st.sampled_from([0.01, 0.5, 0.99]),
       windows=st.integers(1, 4))
def test_any_window_bits_decode_or_fail_like_the_reference(seed, model_kinds, fixed, b, rule,
                                                           density, windows):
  model = build_model(seed, model_kinds, fixed)
  rng = np.random.default_rng(seed)
  n = 16 if b % 16 == 0 else 1
  tokens = (rng.random(windows * b) < density).astype(np.int32)
  if n == 16:
    tokens = tokens.reshape(-1, 16) @ (1 << np.arange(15, -1, -1))
  compiled = acc.EqualInfoACCompressor(model, b, n, rule)
  reference = acc.EqualInfoACCompressor(model, b, n, rule, coder="reference")
  assert decode_outcome(compiled.decode, tokens) == decode_outcome(reference.decode, tokens)


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), model_kinds=kinds, fixed=st.booleans(),
       batch=st.lists(symbol_seqs, min_size=1, max_size=3), n=st.integers(1, 16))
def test_ac_and_static_ac_encode_and_decode_like_the_reference(seed, model_kinds, fixed, batch, n):
  model = build_model(seed, model_kinds, fixed)
  compiled = acc.ArithmeticCodingCompressor(model, n)
  reference = acc.ArithmeticCodingCompressor(model, n, coder="reference")
  for x, g, r in zip(batch, compiled.encode_batch(batch), reference.encode_batch(batch)):
    same_encoded(g, r)
    np.testing.assert_array_equal(compiled.decode(g.tokens), x)
    for t in {0, 1, len(g.tokens) // 2, len(g.tokens)}:  # trimmed examples decode alike
      np.testing.assert_array_equal(compiled.decode_prefix(g.tokens[:t]),
                                    reference.decode_prefix(r.tokens[:t]))


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), fixed=st.booleans(), length=st.integers(0, 300),
       n=st.sampled_from([8, 16]))
def test_random_ac_tokens_decode_or_fail_like_the_reference(seed, fixed, length, n):
  model = build_model(seed, tm.EXTREME_KINDS, fixed)
  tokens = np.random.default_rng(seed).integers(0, 1 << n, length // n + 1).astype(np.int32)
  compiled = acc.ArithmeticCodingCompressor(model, n)
  reference = acc.ArithmeticCodingCompressor(model, n, coder="reference")
  assert decode_outcome(compiled.decode, tokens) == decode_outcome(reference.decode, tokens)
  np.testing.assert_array_equal(compiled.decode_prefix(tokens), reference.decode_prefix(tokens))


@pytest.mark.parametrize("b", [14, 16, 33, 128, 4096])
def test_backoff_and_long_windows_match_the_reference(b):
  # The near-certain lowest symbol keeps lo fixed and forces back-offs (see
  # test_equal_info_windows); 3,000 symbols fill several 4096-bit windows.
  cdf = tm.extreme_cdf("near_certain_lowest", P, np.random.default_rng(0))
  model = cdf_models.FixedCdfModel(cdf, P)
  x = np.concatenate([np.zeros(2000, sym.SYMBOL_DTYPE),
                      np.random.default_rng(1).integers(0, 257, 1000).astype(sym.SYMBOL_DTYPE)])
  compiled = acc.EqualInfoACCompressor(model, b, min(16, b))
  reference = acc.EqualInfoACCompressor(model, b, min(16, b), coder="reference")
  got, want = compiled.encode(x), reference.encode(x)
  same_encoded(got, want)
  np.testing.assert_array_equal(compiled.decode(got.tokens), x)
  states = [eiw.EqualInfoEncoderState(x, b, P)]
  acc.drive_states(model, states)
  assert b > 16 or sum(w.backed_off > 0 for w in states[0].windows) > 0, "no back-off exercised"


def _carries_into_hi(intervals, w_bits):
  """Narrows whose carry ran through every `pending` bit into `hi` (compiled_coder's layout:
  hi holds the multiple of 32 bits above W that pending's flushes left, pending the rest)."""
  count = 0
  for parent, child in zip(intervals, intervals[1:]):
    if parent.scale >= w_bits:
      above_pending = w_bits + (parent.scale - w_bits) % cc.PENDING_FLUSH_BITS
      before_shift = child.lo >> (child.scale - parent.scale)
      count += (before_shift >> above_pending) != (parent.lo >> above_pending)
  return count


def _ones_piling_model_and_symbols():
  """A near-certain highest symbol, mostly coded: it piles ones into lo's low bits, so that
  carries run through all of `pending` (fewer than 32 bits above `low`) into `hi`."""
  freqs = np.ones(sym.NUM_SYMBOLS, np.int64)
  freqs[-1] += (1 << P) - sym.NUM_SYMBOLS
  cdf = np.concatenate([[0], np.cumsum(freqs)])
  rng = np.random.default_rng(0)
  x = np.where(rng.random(3000) < 0.97, sym.NUM_SYMBOLS - 1,
               rng.integers(0, 256, 3000)).astype(sym.SYMBOL_DTYPE)
  return cdf, x


@pytest.mark.parametrize("b", [31, 32, 33, 34, 47, 48, 62, 63, 64, 65, 96, 97, 4096])
def test_carries_through_pending_bits_in_windows_match_the_reference(b):
  # Window widths around multiples of the flush size and around 62 bits: codes are read from
  # hi, pending and low, or (lo < 2**62, nothing in hi) from one int64.
  cdf, x = _ones_piling_model_and_symbols()
  model = cdf_models.FixedCdfModel(cdf, P)
  for rule in eiw.ClosingRule:
    compiled = acc.EqualInfoACCompressor(model, b, 16, rule)
    reference = acc.EqualInfoACCompressor(model, b, 16, rule, coder="reference")
    got, want = compiled.encode(x), reference.encode(x)
    same_encoded(got, want)
    assert decode_outcome(compiled.decode, got.tokens) == decode_outcome(reference.decode,
                                                                         want.tokens)


def test_carries_through_pending_bits_in_static_ac_match_the_reference():
  cdf, x = _ones_piling_model_and_symbols()
  model = cdf_models.FixedCdfModel(cdf, P)
  compiled = acc.ArithmeticCodingCompressor(model, 16)
  reference = acc.ArithmeticCodingCompressor(model, 16, coder="reference")
  got = compiled.encode(x)
  same_encoded(got, reference.encode(x))
  np.testing.assert_array_equal(compiled.decode(got.tokens), x)
  intervals = [ac.initial_interval(P)]
  for s in x:
    intervals.append(ac.narrow(intervals[-1], cdf, int(s), P))
  assert _carries_into_hi(intervals, P + cc.RENORM_HEADROOM_BITS + 1) > 0, "no carry into hi"


def test_unknown_coder_is_refused():
  with pytest.raises(ValueError, match="coder"):
    acc.EqualInfoACCompressor(cdf_models.FixedCdfModel(None, P), 16, 16, coder="fast")
