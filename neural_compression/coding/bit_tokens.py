"""Bitstreams <-> N-bit tokens, and fixed-width codes <-> bitstreams.

Bits are uint8 arrays of 0/1, most significant bit first. Every N consecutive bits form one token
(N in [1, 16]: v = 2**N ids), first bit highest. A final partial token is completed with zero bits;
that is reversible because every bitstream we tokenize is a whole number of b-bit windows with
N <= b, so the decoder recovers the window count as floor(num_tokens * N / b): the padding is
shorter than N <= b bits and can never be mistaken for a window. Windows may straddle tokens
when N does not divide b.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

TOKEN_DTYPE = np.int32  # every method's token ids (Compressor.encode's tokens)
MAX_TOKEN_BITS = 16


def check_token_bits(token_bits: int) -> int:
  """Returns N if 1 <= N <= 16; raises ValueError otherwise."""
  if not 1 <= token_bits <= MAX_TOKEN_BITS:
    raise ValueError(f"token_bits N must be in [1, {MAX_TOKEN_BITS}], got {token_bits}")
  return token_bits


def codes_to_bits(codes: Sequence[int], code_bits: int) -> np.ndarray:
  """Concatenates fixed-width codes (each in [0, 2**code_bits)) into one bit array."""
  if not codes:
    return np.zeros(0, np.uint8)
  nbytes = (code_bits + 7) // 8
  raw = b"".join(int(c).to_bytes(nbytes, "big") for c in codes)
  bits = np.unpackbits(np.frombuffer(raw, np.uint8)).reshape(len(codes), nbytes * 8)
  return np.ascontiguousarray(bits[:, nbytes * 8 - code_bits:]).reshape(-1)


def bits_to_codes(bits: np.ndarray, code_bits: int) -> list[int]:
  """Splits bits into floor(len / code_bits) fixed-width codes; trailing bits are ignored."""
  count = len(bits) // code_bits
  if count == 0:
    return []
  nbytes = (code_bits + 7) // 8
  rows = np.zeros((count, nbytes * 8), np.uint8)
  rows[:, nbytes * 8 - code_bits:] = np.asarray(bits[:count * code_bits], np.uint8).reshape(
      count, code_bits)
  packed = np.packbits(rows, axis=1)
  return [int.from_bytes(row.tobytes(), "big") for row in packed]


def int_to_bits(value: int, num_bits: int) -> np.ndarray:
  """The num_bits-bit big-endian binary expansion of a nonnegative int."""
  return codes_to_bits([value], num_bits) if num_bits else np.zeros(0, np.uint8)


def bits_to_int(bits: np.ndarray) -> int:
  """Inverse of int_to_bits."""
  return bits_to_codes(bits, len(bits))[0] if len(bits) else 0


def bits_to_tokens(bits: np.ndarray, token_bits: int) -> np.ndarray:
  """Cuts bits into N-bit tokens, zero-padding the last one: ceil(len / N) tokens."""
  check_token_bits(token_bits)
  count = -(-len(bits) // token_bits)
  if token_bits in (8, 16):  # whole bytes: packbits is the whole job
    padded = np.zeros(count * token_bits, np.uint8)
    padded[:len(bits)] = bits
    packed = np.packbits(padded)
    return (packed.view(">u2") if token_bits == 16 else packed).astype(TOKEN_DTYPE)
  # Each token's bits go right-aligned into a 16-bit big-endian row that packbits reads as bytes.
  rows = np.zeros((count, MAX_TOKEN_BITS), np.uint8)
  padded = np.zeros(count * token_bits, np.uint8)
  padded[:len(bits)] = bits
  rows[:, MAX_TOKEN_BITS - token_bits:] = padded.reshape(count, token_bits)
  return np.packbits(rows, axis=1).view(">u2").reshape(-1).astype(TOKEN_DTYPE)


def tokens_to_bits(tokens: np.ndarray, token_bits: int) -> np.ndarray:
  """Expands N-bit tokens to their bits (len(tokens) * N bits, padding included)."""
  check_token_bits(token_bits)
  tokens = np.asarray(tokens, np.int64)
  if tokens.size and (tokens.min() < 0 or tokens.max() >= (1 << token_bits)):
    raise ValueError(f"token ids must lie in [0, 2**{token_bits})")
  if token_bits == 8:
    return np.unpackbits(tokens.astype(np.uint8))
  # The bits of each token's 16-bit big-endian form, of which the last N are the token's.
  bits = np.unpackbits(tokens.astype(">u2").view(np.uint8)).reshape(-1, MAX_TOKEN_BITS)
  return np.ascontiguousarray(bits[:, MAX_TOKEN_BITS - token_bits:]).reshape(-1)


def vocab_label(token_bits: int) -> str:
  """The paper's vocabulary label: 'v256' for N=8, 'v65k' for N=16, else 'v<2**N>'."""
  return {8: "v256", 16: "v65k"}.get(token_bits, f"v{1 << token_bits}")
