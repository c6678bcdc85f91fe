"""Bitstream <-> N-bit token round trips, including windows that straddle tokens."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from neural_compression.coding import bit_tokens


@settings(max_examples=300, deadline=None)
@given(data=st.data(), b=st.integers(1, 200), n=st.integers(1, 16))
def test_codes_tokens_round_trip_recovers_the_window_count(data, b, n):
  if n > b:
    n = b if b <= 16 else 16
  codes = data.draw(st.lists(st.integers(0, 2**b - 1), max_size=40))
  bits = bit_tokens.codes_to_bits(codes, b)
  assert len(bits) == b * len(codes)
  tokens = bit_tokens.bits_to_tokens(bits, n)
  assert len(tokens) == -(-len(bits) // n)
  assert tokens.min(initial=0) >= 0 and tokens.max(initial=0) < 2**n
  assert bit_tokens.bits_to_codes(bit_tokens.tokens_to_bits(tokens, n), b) == codes


def test_msb_first_layout():
  bits = bit_tokens.codes_to_bits([0b1010000000000001], 16)
  assert bit_tokens.bits_to_tokens(bits, 8).tolist() == [0b10100000, 0b00000001]
  assert bit_tokens.bits_to_tokens(bit_tokens.codes_to_bits([0b101], 3), 2).tolist() == [2, 2]


def test_out_of_range_tokens_and_widths_are_refused():
  with pytest.raises(ValueError):
    bit_tokens.tokens_to_bits(np.array([256]), 8)
  with pytest.raises(ValueError):
    bit_tokens.bits_to_tokens(np.zeros(8, np.uint8), 17)
