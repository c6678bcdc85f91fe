"""The paper's compression ratios of one method over a set of symbol sequences.

Definitions: the paper's, and the same as the Beam job's stats.json and seqio_tasks.metrics use.

  * input bytes: the number of input symbols. Every EOS counts as one byte, as the data pipeline
    appends one EOS per document and the paper's bits/byte divides by the example's bytes with
    its separators; it keeps Bytes at a token ratio of exactly 1.0.
  * input bits = 8 * input bytes.
  * output tokens: the number of token ids the compressor emits, padding of a final partial
    token included (an M2 model has to predict those tokens too).
  * output bits = output tokens * bits_per_token, where bits_per_token is the compressor's
    log2(vocab_size) (8 for N-bit bitstream tokens with v = 256, 16 for v = 65,536, log2 of the
    piece count for SentencePiece), except Bytes, which the paper counts as 8 bits per token
    (not log2 257). We use token capacity rather than the encoder's payload bits (Encoded.num_bits)
    because the paper's bit ratio is about what the M2 sequence costs: for bitstream methods it
    differs from the payload only by the zero padding of the last token. The payload is reported
    too, as 'payload_bits'.
  * token compression ratio = input bytes / output tokens (bytes per token).
  * bit compression ratio = input bits / output bits.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from neural_compression import symbols as sym
from neural_compression.methods.compressor import Compressor


def measure_compression(compressor: Compressor, symbol_arrays: Iterable[np.ndarray], *,
                        verify: bool = False) -> dict:
  """Encodes every sequence and returns the paper's ratios and the counts behind them.

  Args:
    compressor: the method.
    symbol_arrays: 1-D symbol sequences (bytes + EOS), e.g. 10,240-symbol examples.
    verify: also decode every encoding and raise ValueError unless it is the input exactly.
  Returns:
    A dict with 'token_ratio' (input bytes per output token), 'bit_ratio' (input bits per
    output bit), 'bytes' (input bytes, EOS counted as one), 'tokens' (output tokens), 'bits'
    (output bits = tokens * compressor.bits_per_token), 'payload_bits' (sum of Encoded.num_bits,
    before padding of final tokens) and 'sequences'. Ratios are 0.0 when there are no tokens.
  """
  data = [sym.validate_symbols(x) for x in symbol_arrays]
  nbytes = tokens = 0
  payload_bits = 0.0
  for x, e in zip(data, compressor.encode_batch(data)):
    nbytes += len(x)
    tokens += len(e.tokens)
    payload_bits += e.num_bits
    if verify and not np.array_equal(compressor.decode(e.tokens), x):
      raise ValueError(f"{compressor.name}: a sequence of {len(x)} symbols does not round-trip")
  bits = tokens * compressor.bits_per_token
  return {"token_ratio": nbytes / tokens if tokens else 0.0,
          "bit_ratio": 8 * nbytes / bits if bits else 0.0,
          "bytes": nbytes, "tokens": tokens, "bits": bits, "payload_bits": payload_bits,
          "sequences": len(data)}
