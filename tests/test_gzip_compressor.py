"""GZip baseline: the paper's zlib stream as tokens, lossless, prefix-decodable."""
import pickle
import zlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from neural_compression import symbols as sym
from neural_compression.methods import gzip as gzip_compressor

# A small alphabet (repeats, so zlib finds matches) mixed with any symbol: EOS, 0xFF (the escape
# byte), NUL and bytes that are invalid UTF-8.
_FEW = st.sampled_from([0, 1, 65, 0xC3, 0xFF, 0xFF, sym.EOS, 32, 101])
_ANY = st.integers(0, sym.NUM_SYMBOLS - 1)
symbol_seqs = st.lists(st.one_of(_FEW, _ANY), max_size=400).map(
    lambda xs: np.asarray(xs, sym.SYMBOL_DTYPE))


@settings(max_examples=150, deadline=None)
@given(x=symbol_seqs, n=st.sampled_from([8, 16]))
def test_round_trip_and_prefixes(x, n):
  c = gzip_compressor.GzipCompressor(n)
  e = c.encode(x)
  assert e.tokens.min(initial=0) >= 0 and e.tokens.max(initial=0) < c.vocab_size
  np.testing.assert_array_equal(c.decode(e.tokens), x)
  # num_bits is the zlib stream's length; tokens carry it plus < N bits of padding.
  assert e.num_bits == 8 * len(zlib.compress(sym.symbols_to_escaped_bytes(x)))
  assert 0 <= len(e.tokens) * n - e.num_bits < n and e.num_bits % 8 == 0
  counts = e.symbols_at_token
  assert counts[-1] == len(x) and np.all(np.diff(counts) >= 0)
  for t in {0, len(e.tokens) // 3, len(e.tokens) // 2, len(e.tokens)}:
    np.testing.assert_array_equal(c.decode_prefix(e.tokens[:t]), x[:counts[t]])


def test_names_and_vocab():
  assert gzip_compressor.GzipCompressor(8).name == "gzip:v256"
  assert gzip_compressor.GzipCompressor(16).name == "gzip:v65k"
  assert gzip_compressor.GzipCompressor(8).vocab_size == 256
  assert gzip_compressor.GzipCompressor(16).vocab_size == 65536
  with pytest.raises(ValueError):
    gzip_compressor.GzipCompressor(12)


def test_tokens_are_the_default_level_zlib_stream():
  x = sym.bytes_to_symbols(b"abracadabra " * 50)
  stream = zlib.compress(sym.symbols_to_escaped_bytes(x))
  c8, c16 = gzip_compressor.GzipCompressor(8), gzip_compressor.GzipCompressor(16)
  assert c8.encode(x).tokens.tolist() == list(stream)
  padded = stream + b"\0" * (len(stream) % 2)
  assert c16.encode(x).tokens.tolist() == [padded[i] << 8 | padded[i + 1]
                                           for i in range(0, len(padded), 2)]
  assert c16.encode(x).num_bits == c8.encode(x).num_bits == 8 * len(stream)


def test_odd_stream_is_padded_with_one_zero_byte():
  # Find an input whose stream has an odd length, so v65k needs the padding byte.
  for k in range(1, 50):
    x = sym.bytes_to_symbols(bytes(range(k)))
    stream = zlib.compress(sym.symbols_to_escaped_bytes(x))
    if len(stream) % 2:
      break
  tokens = gzip_compressor.GzipCompressor(16).encode(x).tokens
  assert len(tokens) == (len(stream) + 1) // 2 and tokens[-1] & 0xFF == 0
  np.testing.assert_array_equal(gzip_compressor.GzipCompressor(16).decode(tokens), x)


def test_empty_input_is_a_complete_stream():
  c = gzip_compressor.GzipCompressor(8)
  e = c.encode(np.zeros(0, sym.SYMBOL_DTYPE))
  assert len(e.tokens) == len(zlib.compress(b""))
  assert len(c.decode(e.tokens)) == 0


def test_corrupt_or_truncated_tokens_raise():
  c = gzip_compressor.GzipCompressor(8)
  tokens = c.encode(sym.bytes_to_symbols(b"hello world " * 20)).tokens
  with pytest.raises(ValueError, match="truncated"):
    c.decode(tokens[:-3])
  with pytest.raises(ValueError, match="truncated"):
    c.decode(tokens[:0])
  with pytest.raises(ValueError, match="corrupt"):
    c.decode(np.array([1, 2, 3, 4]))
  bad_checksum = tokens.copy()
  bad_checksum[-1] ^= 1  # the last byte of the Adler-32 trailer
  with pytest.raises(ValueError, match="corrupt"):
    c.decode(bad_checksum)
  with pytest.raises(ValueError):
    c.decode(np.array([256]))  # not an 8-bit token


def test_picklable():
  c = pickle.loads(pickle.dumps(gzip_compressor.GzipCompressor(16)))
  x = sym.document_symbols("pickled")
  np.testing.assert_array_equal(c.decode(c.encode(x).tokens), x)
