"""Bytes (ByT5-style): one token per symbol. Token id = symbol: 0..255 bytes, 256 = EOS.

The vocabulary has 257 ids, but a token is counted as 8 bits (num_bits = 8 * num_tokens, and
bits_per_token = 8), as the paper counts Bytes: bit compression ratio 1.0. EOS is a token like
any byte and is counted as one input byte.
"""
from __future__ import annotations

import numpy as np

from neural_compression import symbols as sym
from neural_compression.methods.compressor import TOKEN_DTYPE, Compressor, Encoded


class BytesCompressor(Compressor):
  """Identity tokenization; vocab 257. num_bits counts 8 bits per token (the paper's Bytes)."""

  @property
  def name(self) -> str:
    return "bytes"

  @property
  def vocab_size(self) -> int:
    return sym.NUM_SYMBOLS

  @property
  def bits_per_token(self) -> float:
    return 8.0  # a byte is 8 bits; EOS is a separator the paper counts as a byte

  def encode(self, symbols: np.ndarray) -> Encoded:
    tokens = sym.validate_symbols(symbols).astype(TOKEN_DTYPE)
    return Encoded(tokens=tokens, num_bits=8 * len(tokens), num_windows=1,
                   symbols_at_token=np.arange(len(tokens) + 1))

  def decode(self, tokens: np.ndarray) -> np.ndarray:
    """Returns the tokens as symbols; raises ValueError on ids outside [0, 257)."""
    return sym.validate_symbols(np.asarray(tokens))
