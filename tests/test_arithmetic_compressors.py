"""AC, StaticAC and EqualInfoAC through the Compressor interface: lossless from tokens alone."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from neural_compression.methods import arithmetic as acc
from neural_compression import corpus
from neural_compression.coding import equal_info_windows as eiw
from neural_compression.methods import static_unigram
from neural_compression import symbols as sym
from tests import coding_test_models as tm

symbol_seqs = st.lists(st.integers(0, sym.NUM_SYMBOLS - 1), max_size=300).map(
    lambda xs: np.asarray(xs, sym.SYMBOL_DTYPE))


@settings(max_examples=80, deadline=None)
@given(x=symbol_seqs, seed=st.integers(0, 2**32 - 1), n=st.sampled_from([8, 16, 5]),
       kinds=st.lists(st.sampled_from(tm.EXTREME_KINDS), min_size=1, max_size=3))
def test_ac_round_trip_and_bit_bound(x, seed, n, kinds):
  model = tm.make_model(seed, tuple(kinds), 14)
  compressor = acc.ArithmeticCodingCompressor(model, n)
  encoded = compressor.encode(x)
  np.testing.assert_array_equal(compressor.decode(encoded.tokens), x)
  info = sum(-math.log2((model.cdf(x[:i])[s + 1] - model.cdf(x[:i])[s]) / 2**14)
             for i, s in enumerate(x.tolist()))
  # Stated bound: header + -sum log2 p + truncation loss + 2 bits for the final block.
  assert encoded.num_bits <= acc.LENGTH_HEADER_BITS + info + len(x) * 2**-16 / math.log(2) + 2
  assert len(encoded.tokens) == -(-encoded.num_bits // n)


@settings(max_examples=60, deadline=None)
@given(x=symbol_seqs, seed=st.integers(0, 2**32 - 1), b=st.sampled_from([16, 24, 32, 64, 128]),
       n=st.sampled_from([8, 16, 3]))
def test_equal_info_round_trip_through_tokens_for_every_b_and_n(x, seed, b, n):
  model = tm.make_model(seed, tm.EXTREME_KINDS, 14)
  compressor = acc.EqualInfoACCompressor(model, b, n)
  encoded = compressor.encode(x)
  assert encoded.num_bits == b * encoded.num_windows
  assert len(encoded.tokens) == -(-encoded.num_bits // n)
  np.testing.assert_array_equal(compressor.decode(encoded.tokens), x)


def test_names_follow_the_methods_syntax():
  model = tm.make_model(0, ("uniform",), 14)
  assert acc.EqualInfoACCompressor(model, 16, 16).name == "equal_info_ac:b16:v65k"
  assert acc.EqualInfoACCompressor(model, 32, 8, "paper").name == "equal_info_ac:b32:v256:paper"
  assert acc.ArithmeticCodingCompressor(model, 8, "static_ac").name == "static_ac:v256"
  with pytest.raises(ValueError):
    acc.EqualInfoACCompressor(model, 16, 17)


def test_truncated_ac_stream_is_a_clear_error():
  model = tm.make_model(1, ("random",), 14)
  compressor = acc.ArithmeticCodingCompressor(model, 8)
  tokens = compressor.encode(np.arange(200, dtype=sym.SYMBOL_DTYPE) % 257).tokens
  with pytest.raises(eiw.DecodeError, match="truncated or corrupt"):
    compressor.decode(tokens[:len(tokens) // 2])


def test_static_unigram_artifact_round_trip_and_checksum(tmp_path):
  train = list(corpus.default_corpus_documents("train"))[:5]
  model = static_unigram.StaticUnigramModel.estimate(train, source="test")
  assert model.counts[sym.EOS] == 5
  assert model.counts[:256].sum() == sum(len(d["text"].encode()) for d in train)
  path = tmp_path / "unigram.json"
  model.save(path)
  loaded = static_unigram.StaticUnigramModel.load(path)
  np.testing.assert_array_equal(loaded.cdf(None), model.cdf(None))
  corrupt = path.read_text().replace('"counts": [\n  ', '"counts": [\n  1', 1)
  with pytest.raises(ValueError, match="checksum"):
    static_unigram.StaticUnigramModel.from_json(corrupt)


def test_static_ac_on_real_text_round_trips():
  train = list(corpus.default_corpus_documents("train"))[:20]
  model = static_unigram.StaticUnigramModel.estimate(train)
  text = next(corpus.default_corpus_documents("validation"))["text"]
  x = sym.document_symbols(text)[:3000]
  for c in (acc.ArithmeticCodingCompressor(model, 8, "static_ac"),
            acc.EqualInfoACCompressor(model, 16, 16)):
    np.testing.assert_array_equal(c.decode(c.encode(x).tokens), x)


@settings(max_examples=40, deadline=None)
@given(x=symbol_seqs, seed=st.integers(0, 2**32 - 1), n=st.sampled_from([8, 16]),
       method=st.sampled_from(["ac", "eq16", "eq24"]))
def test_symbols_at_token_is_what_a_token_prefix_decodes_to(x, seed, n, method):
  model = tm.make_model(seed, ("random", "near_certain"), 14)
  if method == "ac":
    compressor = acc.ArithmeticCodingCompressor(model, n)
  else:
    compressor = acc.EqualInfoACCompressor(model, int(method[2:]), n)
  encoded = compressor.encode(x)
  counts = encoded.symbols_at_token
  assert len(counts) == len(encoded.tokens) + 1 and counts[-1] == len(x)
  assert np.all(np.diff(counts) >= 0)
  for t in sorted({0, 1, len(encoded.tokens) // 2, len(encoded.tokens) - 1}):
    if not 0 <= t <= len(encoded.tokens):
      continue
    k = counts[t]
    decode = compressor.decode_prefix if method == "ac" else compressor.decode
    np.testing.assert_array_equal(decode(encoded.tokens[:t]), x[:k])
