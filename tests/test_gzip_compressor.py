"""GZip baseline: the paper's zlib stream as tokens, lossless, prefix-decodable."""
import zlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from neural_compression import symbols as sym
from neural_compression.baselines import gzip_compressor

symbol_seqs = st.lists(st.sampled_from([0, 1, 65, 0xC3, 0xFF, 0xFF, sym.EOS, 32, 101]),
                       max_size=400).map(lambda xs: np.asarray(xs, sym.SYMBOL_DTYPE))


@settings(max_examples=150, deadline=None)
@given(x=symbol_seqs, n=st.sampled_from([8, 16]))
def test_round_trip_and_prefixes(x, n):
  c = gzip_compressor.GzipCompressor(n)
  e = c.encode(x)
  assert e.tokens.max(initial=0) < c.vocab_size
  np.testing.assert_array_equal(c.decode(e.tokens), x)
  counts = e.symbols_at_token
  assert counts[-1] == len(x) and np.all(np.diff(counts) >= 0)
  for t in {0, len(e.tokens) // 3, len(e.tokens) // 2, len(e.tokens)}:
    np.testing.assert_array_equal(c.decode_prefix(e.tokens[:t]), x[:counts[t]])


def test_tokens_are_the_default_level_zlib_stream():
  x = sym.bytes_to_symbols(b"abracadabra " * 50)
  stream = zlib.compress(sym.symbols_to_escaped_bytes(x))
  c8, c16 = gzip_compressor.GzipCompressor(8), gzip_compressor.GzipCompressor(16)
  assert c8.encode(x).tokens.tolist() == list(stream)
  padded = stream + b"\0" * (len(stream) % 2)
  assert c16.encode(x).tokens.tolist() == [padded[i] << 8 | padded[i + 1]
                                           for i in range(0, len(padded), 2)]
  assert c16.encode(x).num_bits == 8 * len(stream)


def test_corrupt_or_truncated_tokens_raise():
  c = gzip_compressor.GzipCompressor(8)
  tokens = c.encode(sym.bytes_to_symbols(b"hello world " * 20)).tokens
  with pytest.raises(ValueError, match="truncated"):
    c.decode(tokens[:-3])
  with pytest.raises(ValueError, match="corrupt"):
    c.decode(np.array([1, 2, 3, 4]))
