"""GZip as in the paper: Python zlib at the default level, header and Adler-32 trailer kept.

Input: the symbols' escaped byte serialization (symbols.symbols_to_escaped_bytes: EOS -> FF 00).
Output: the zlib stream's bytes cut into N-bit tokens (N = 8 or 16, v = 256 or 65,536). For
N = 16 an odd byte count is completed with one zero byte; the zlib stream is self-delimiting, so
the decoder stops at its end and ignores the padding.
"""
from __future__ import annotations

import zlib

import numpy as np

from neural_compression.coding import bit_tokens
from neural_compression import symbols as sym
from neural_compression.methods.compressor import Compressor, Encoded


class GzipCompressor(Compressor):
  """zlib stream bytes as N-bit tokens: 'gzip:v256' (N = 8) or 'gzip:v65k' (N = 16).

  num_bits = 8 * len(zlib stream) bits: the stream without the padding byte of N = 16.
  `decode` raises ValueError on tokens that are not a complete, checksum-valid zlib stream
  (bytes after the stream's end, such as the padding, are ignored).
  """

  def __init__(self, token_bits: int = 8):
    """Args: token_bits: N, bits per token; 8 (one stream byte) or 16 (two, big-endian)."""
    if token_bits not in (8, 16):
      raise ValueError(f"gzip tokens are bytes or byte pairs (N = 8 or 16), got N={token_bits}")
    self.token_bits = token_bits

  @property
  def name(self) -> str:
    return f"gzip:{bit_tokens.vocab_label(self.token_bits)}"

  @property
  def vocab_size(self) -> int:
    return 1 << self.token_bits

  def _tokens(self, data: bytes) -> np.ndarray:
    return bit_tokens.bits_to_tokens(np.unpackbits(np.frombuffer(data, np.uint8)),
                                     self.token_bits)

  def encode(self, symbols: np.ndarray) -> Encoded:
    escaped = sym.symbols_to_escaped_bytes(symbols)
    stream = zlib.compress(escaped)  # default level, zlib header and Adler-32 trailer
    tokens = self._tokens(stream)
    return Encoded(tokens=tokens, num_bits=8 * len(stream), num_windows=1,
                   symbols_at_token=self._symbols_at_token(stream, len(tokens)))

  def _symbols_at_token(self, stream: bytes, num_tokens: int) -> np.ndarray:
    # Feed the stream token by token: what a decoder holding t tokens can already output.
    per_token = self.token_bits // 8
    out = np.zeros(num_tokens + 1, np.int64)
    decomp = zlib.decompressobj()
    symbols = 0
    pending_escape = False  # an FF whose partner byte has not been produced yet
    for t in range(1, num_tokens + 1):
      for byte in decomp.decompress(stream[(t - 1) * per_token:t * per_token]):
        if pending_escape:
          pending_escape = False
          symbols += 1
        elif byte == 0xFF:
          pending_escape = True
        else:
          symbols += 1
      out[t] = symbols
    return out

  def _stream(self, tokens: np.ndarray) -> bytes:
    return np.packbits(bit_tokens.tokens_to_bits(tokens, self.token_bits)).tobytes()

  def decode(self, tokens: np.ndarray) -> np.ndarray:
    """Inflates the stream the tokens carry; raises ValueError if corrupt or truncated."""
    decomp = zlib.decompressobj()
    try:
      data = decomp.decompress(self._stream(tokens))
    except zlib.error as e:
      raise ValueError(f"corrupt gzip tokens: {e}") from None
    if not decomp.eof:
      raise ValueError("truncated gzip tokens: the zlib stream does not end")
    return sym.escaped_bytes_to_symbols(data)

  def decode_prefix(self, tokens: np.ndarray) -> np.ndarray:
    """Decodes what a (possibly trimmed) token prefix determines."""
    try:
      data = zlib.decompressobj().decompress(self._stream(tokens))
    except zlib.error as e:
      raise ValueError(f"corrupt gzip tokens: {e}") from None
    return sym.escaped_bytes_to_symbols(data[:_whole_bytes(data)])


def _whole_bytes(data: bytes) -> int:
  """Length of the longest prefix that holds no dangling escape byte."""
  i = n = len(data)
  run = 0
  while i > 0 and data[i - 1] == 0xFF:  # count the trailing FF run
    i -= 1
    run += 1
  # A trailing FF run starts at a symbol boundary (the byte before it ends a literal or an
  # FF 00 pair), so its FFs pair up from the left and an odd run ends with a lone escape.
  return n - (run % 2)
