"""Bytes baseline: identity tokens, EOS as 256, 8 bits per token."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from neural_compression import symbols as sym
from neural_compression.methods import bytes as bytes_compressor


@given(st.lists(st.integers(0, sym.NUM_SYMBOLS - 1), max_size=200))
def test_round_trip(xs):
  x = np.asarray(xs, sym.SYMBOL_DTYPE)
  c = bytes_compressor.BytesCompressor()
  e = c.encode(x)
  assert e.tokens.tolist() == xs and e.num_bits == 8 * len(xs)
  assert e.tokens.max(initial=0) < c.vocab_size
  np.testing.assert_array_equal(c.decode(e.tokens), x)
  np.testing.assert_array_equal(e.symbols_at_token, np.arange(len(xs) + 1))


def test_layout():
  c = bytes_compressor.BytesCompressor()
  assert (c.name, c.vocab_size, c.bits_per_token) == ("bytes", 257, 8.0)
  assert c.encode(sym.document_symbols(b"\x00\xff")).tokens.tolist() == [0, 255, sym.EOS]


def test_out_of_range_tokens_raise():
  with pytest.raises(ValueError):
    bytes_compressor.BytesCompressor().decode(np.array([300]))
  with pytest.raises(ValueError):
    bytes_compressor.BytesCompressor().decode(np.array([-1]))
