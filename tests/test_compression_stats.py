"""measure_compression: the paper's token and bit compression ratios."""
import zlib

import pytest

from neural_compression import compression_stats
from neural_compression import symbols as sym
from neural_compression.methods import bytes as bytes_compressor
from neural_compression.methods import gzip as gzip_compressor


def _data():
  return [sym.document_symbols(b"abc " * 40), sym.bytes_to_symbols(b"\xff\x00 tail")]


def test_bytes_ratios_are_one_and_eos_counts_as_a_byte():
  stats = compression_stats.measure_compression(bytes_compressor.BytesCompressor(), _data(),
                                                verify=True)
  nbytes = 161 + 7  # 160 bytes + EOS, then 7 bytes
  assert stats["bytes"] == stats["tokens"] == nbytes and stats["sequences"] == 2
  assert stats["bits"] == stats["payload_bits"] == 8 * nbytes
  assert stats["token_ratio"] == stats["bit_ratio"] == 1.0


@pytest.mark.parametrize("n", [8, 16])
def test_gzip_ratios(n):
  data = _data()
  streams = [zlib.compress(sym.symbols_to_escaped_bytes(x)) for x in data]
  tokens = sum((len(s) * 8 + n - 1) // n for s in streams)
  stats = compression_stats.measure_compression(gzip_compressor.GzipCompressor(n), data,
                                                verify=True)
  assert stats["tokens"] == tokens and stats["bits"] == tokens * n
  assert stats["payload_bits"] == 8 * sum(len(s) for s in streams)
  assert stats["token_ratio"] == pytest.approx(stats["bytes"] / tokens)
  assert stats["bit_ratio"] == pytest.approx(8 * stats["bytes"] / (tokens * n))


def test_empty_input():
  stats = compression_stats.measure_compression(bytes_compressor.BytesCompressor(), [])
  assert stats["tokens"] == 0 and stats["token_ratio"] == stats["bit_ratio"] == 0.0
