"""The arithmetic-coding methods of the paper behind the `Compressor` interface.

* `EqualInfoACCompressor` (EqualInfoAC[b, v]): equal-info windows of b bits (see
  `equal_info_windows`), concatenated and cut into N-bit tokens (`bit_tokens`).
* `ArithmeticCodingCompressor` (AC with M1, StaticAC with a unigram model): one code for the whole
  example, no resets. Its token stream starts with a 32-bit header holding the number of symbols,
  then the minimal code of the final interval padded with zeros to a whole token. The header
  (2 tokens at N=16, 4 at N=8, i.e. 0.003 bits/byte on a 10,240-byte example) is what makes the
  whole example decodable from the tokens alone: the paper's AC had no end marker.

Both run on the compiled coder (`coding.batch_coder`) by default; `coder="reference"` runs the
pure-Python reference coder instead, which produces the same tokens bit for bit and is the oracle
the tests compare the compiled path against.
"""
from __future__ import annotations

import numpy as np

from neural_compression.coding import arithmetic_coder as ac
from neural_compression.coding import bit_tokens
from neural_compression.coding import cdf_models
from neural_compression.coding import equal_info_windows as eiw
from neural_compression import symbols as sym
from neural_compression.coding import batch_coder
from neural_compression.coding import compiled_coder
from neural_compression.methods.compressor import Compressor, Encoded

LENGTH_HEADER_BITS = 32
# AC rows advanced together, each with a KV buffer of 2 x the attention window (1.2 MB per row
# for the shipped M1's 512 positions). 64 rather than 16: BLAS runs the forward's GEMMs at 16
# rows at about half its rate at 64, and each step's Python work is shared by more rows
# (measured +13-15% bytes/s on 2026-12-03).
LOCKSTEP_ROWS = 64
# ... and fewer for long examples: a lockstep batch's code and trace buffers take ~40 bytes per
# row per symbol of its longest row (batch_coder.ACEncoderBatch), 40 MB at this many symbols.
LOCKSTEP_SYMBOLS = 1 << 20
STATIC_AC_ROWS = 64  # StaticAC rows per compiled call (bounds the per-row interval traces)
CODERS = ("compiled", "reference")


def _check_coder(coder: str) -> str:
  if coder not in CODERS:
    raise ValueError(f"coder must be one of {CODERS}, got {coder!r}")
  return coder


class EqualInfoACCompressor(Compressor):
  """EqualInfoAC[b, v]: tokens are the N-bit pieces of consecutive b-bit window codes."""

  def __init__(self, model: cdf_models.CdfModel, window_bits: int, token_bits: int,
               rule: eiw.ClosingRule | str = eiw.ClosingRule.UNAMBIGUOUS,
               name_prefix: str = "equal_info_ac", coder: str = "compiled"):
    eiw.check_window_bits(window_bits, model.precision_bits)
    bit_tokens.check_token_bits(token_bits)
    if token_bits > window_bits:
      raise ValueError(f"token_bits N={token_bits} must be <= window_bits b={window_bits}")
    self.model = model
    self.window_bits = window_bits
    self.token_bits = token_bits
    self.rule = eiw.ClosingRule(rule)
    self._name_prefix = name_prefix
    self.coder = _check_coder(coder)

  @property
  def name(self) -> str:
    suffix = "" if self.rule is eiw.ClosingRule.UNAMBIGUOUS else f":{self.rule.value}"
    return (f"{self._name_prefix}:b{self.window_bits}:"
            f"{bit_tokens.vocab_label(self.token_bits)}{suffix}")

  @property
  def vocab_size(self) -> int:
    return 1 << self.token_bits

  def windows_to_encoded(self, windows: list[eiw.Window]) -> Encoded:
    """Packs closed windows (e.g. from a batched engine) into tokens."""
    return self.window_bits_to_encoded(
        bit_tokens.codes_to_bits([w.code for w in windows], self.window_bits),
        np.array([w.num_symbols for w in windows], np.int64))

  def window_bits_to_encoded(self, bits: np.ndarray, num_symbols: np.ndarray) -> Encoded:
    """Packs consecutive b-bit window codes (bits) holding num_symbols[i] symbols into tokens."""
    tokens = bit_tokens.bits_to_tokens(bits, self.token_bits)
    num_windows = len(num_symbols)
    # t tokens hold floor(t * N / b) whole windows, and each window decodes on its own.
    whole_windows = np.arange(len(tokens) + 1) * self.token_bits // self.window_bits
    per_window = np.concatenate([np.zeros(1, np.int64),
                                 np.cumsum(num_symbols, dtype=np.int64)])
    return Encoded(tokens=tokens, num_bits=len(bits), num_windows=num_windows,
                   symbols_at_token=per_window[np.minimum(whole_windows, num_windows)])

  def encode(self, symbols: np.ndarray) -> Encoded:
    return self.encode_batch([symbols])[0]

  def encode_batch(self, batch: list[np.ndarray]) -> list[Encoded]:
    """Encodes many examples in lockstep: one batched model call per step for all rows.

    Each example is one row that resets its context at its own window boundaries (continuous
    batching); the model's CDFs do not depend on the batch, so neither does the output.
    """
    if self.coder == "compiled":
      encoder = batch_coder.WindowEncoderBatch(batch, self.window_bits, self.model.precision_bits,
                                               self.rule)
      encoder.run(self.model)
      return [self.window_bits_to_encoded(bits, num_symbols)
              for bits, num_symbols, _ in encoder.row_windows()]
    states = [eiw.EqualInfoEncoderState(x, self.window_bits, self.model.precision_bits,
                                        self.rule) for x in batch]
    drive_states(self.model, states)
    return [self.windows_to_encoded(s.windows) for s in states]

  def window_codes(self, tokens: np.ndarray) -> list[int]:
    """The b-bit window codes in a token sequence (floor(len * N / b) of them)."""
    return bit_tokens.bits_to_codes(bit_tokens.tokens_to_bits(tokens, self.token_bits),
                                    self.window_bits)

  def decode(self, tokens: np.ndarray) -> np.ndarray:
    # Windows are independent, so all of them decode together as rows of one batch.
    if self.coder == "compiled":
      bits = bit_tokens.tokens_to_bits(tokens, self.token_bits)
      return batch_coder.decode_window_bits(bits, len(bits) // self.window_bits, self.model,
                                            self.window_bits, self.rule)
    states = [eiw.EqualInfoDecoderState(code, self.window_bits, self.model.precision_bits,
                                        self.rule) for code in self.window_codes(tokens)]
    drive_states(self.model, states)
    parts = [s.symbols for s in states]
    return np.concatenate(parts) if parts else np.zeros(0, sym.SYMBOL_DTYPE)


def drive_states(model: cdf_models.CdfModel, states) -> None:
  """Feeds every unfinished state the CDF after its context, one batched call per step."""
  active = [s for s in states if not s.done]
  while active:
    for state, cdf in zip(active, model.cdfs([s.context() for s in active])):
      state.feed(cdf)
    active = [s for s in active if not s.done]


class ArithmeticCodingCompressor(Compressor):
  """AC / StaticAC: one arithmetic code per example, prefixed by a 32-bit symbol count."""

  def __init__(self, model: cdf_models.CdfModel, token_bits: int, name_prefix: str = "ac",
               coder: str = "compiled"):
    bit_tokens.check_token_bits(token_bits)
    self.model = model
    self.token_bits = token_bits
    self._name_prefix = name_prefix
    self.coder = _check_coder(coder)

  @property
  def name(self) -> str:
    return f"{self._name_prefix}:{bit_tokens.vocab_label(self.token_bits)}"

  @property
  def vocab_size(self) -> int:
    return 1 << self.token_bits

  def _cdf_stream(self, batch: list[np.ndarray]):
    """Yields, per position i, the CDFs [len(batch), ...] after each row's first i symbols."""
    lockstep = getattr(self.model, "lockstep", None)
    longest = max((len(x) for x in batch), default=0)
    if lockstep is not None:  # M1: all rows advance together through one KV buffer
      session = lockstep(len(batch))
      tokens = None  # the session starts every row from the start-of-segment token
      for i in range(longest):
        yield session.step(tokens)
        tokens = np.array([x[i] if i < len(x) else 0 for x in batch], np.int64)
      return
    for i in range(longest):
      yield self.model.cdfs([x[:i] for x in batch])

  def encode(self, symbols: np.ndarray) -> Encoded:
    return self.encode_batch([symbols])[0]

  def encode_batch(self, batch: list[np.ndarray]) -> list[Encoded]:
    static = batch_coder.fixed_cdf(self.model) is not None
    if static and self.coder == "compiled":
      rows = STATIC_AC_ROWS
    else:
      longest = max(1, max((len(x) for x in batch), default=0))
      rows = max(1, min(LOCKSTEP_ROWS, LOCKSTEP_SYMBOLS // longest))
    if len(batch) > rows:  # bounds the lockstep KV buffer's and the traces' memory
      return [e for i in range(0, len(batch), rows) for e in self.encode_batch(batch[i:i + rows])]
    batch = [sym.validate_symbols(x) for x in batch]
    if self.coder == "compiled":
      return self._encode_compiled(batch)
    p = self.model.precision_bits
    paths = [[ac.initial_interval(p)] for _ in batch]
    for i, cdfs in enumerate(self._cdf_stream(batch)):
      for x, path, cdf in zip(batch, paths, cdfs):
        if i < len(x):
          path.append(ac.narrow(path[-1], cdf, int(x[i]), p))
    return [self._finish(x, path) for x, path in zip(batch, paths)]

  def _encode_compiled(self, batch: list[np.ndarray]) -> list[Encoded]:
    encoder = batch_coder.ACEncoderBatch(batch, self.model.precision_bits)
    cdf = batch_coder.fixed_cdf(self.model)
    if cdf is not None:
      encoder.run_static(cdf)
    else:
      for i, cdfs in enumerate(self._cdf_stream(batch)):
        encoder.feed(i, np.asarray(cdfs, np.int64))
    out = []
    for row, x in enumerate(batch):
      if len(x) >= 1 << LENGTH_HEADER_BITS:
        raise ValueError(f"at most 2**{LENGTH_HEADER_BITS} - 1 symbols per example")
      code, needed = encoder.finish(row)
      n = len(code)
      padded = -(-(LENGTH_HEADER_BITS + n) // self.token_bits) * self.token_bits
      bits = np.concatenate([bit_tokens.int_to_bits(len(x), LENGTH_HEADER_BITS), code,
                             np.zeros(padded - LENGTH_HEADER_BITS - n, np.uint8)])
      tokens = bit_tokens.bits_to_tokens(bits, self.token_bits)
      out.append(Encoded(tokens=tokens, num_bits=LENGTH_HEADER_BITS + n, num_windows=1,
                         symbols_at_token=self._symbols_from_needed(needed, len(tokens))))
    return out

  def _symbols_from_needed(self, needed: np.ndarray, num_tokens: int) -> np.ndarray:
    # needed[k]: fewest leading code bits that determine the first k symbols (nondecreasing).
    available = np.arange(num_tokens + 1) * self.token_bits - LENGTH_HEADER_BITS
    counts = np.searchsorted(np.asarray(needed), available, side="right") - 1
    return np.where(available >= 0, counts, 0).astype(np.int64)

  def _finish(self, symbols: np.ndarray, intervals: list[ac.Interval]) -> Encoded:
    if len(symbols) >= 1 << LENGTH_HEADER_BITS:
      raise ValueError(f"at most 2**{LENGTH_HEADER_BITS} - 1 symbols per example")
    n = ac.minimal_code_length(intervals[-1]) if len(symbols) else 0
    code = ac.lowest_block(intervals[-1], n) if len(symbols) else 0
    padded = -(-(LENGTH_HEADER_BITS + n) // self.token_bits) * self.token_bits
    code_bits = padded - LENGTH_HEADER_BITS
    code <<= code_bits - n  # a sub-block of the code's block: still inside
    bits = np.concatenate([bit_tokens.int_to_bits(len(symbols), LENGTH_HEADER_BITS),
                           bit_tokens.int_to_bits(code, code_bits)])
    tokens = bit_tokens.bits_to_tokens(bits, self.token_bits)
    return Encoded(tokens=tokens, num_bits=LENGTH_HEADER_BITS + n, num_windows=1,
                   symbols_at_token=self._symbols_at_token(intervals, code, code_bits,
                                                           len(tokens)))

  def _symbols_at_token(self, intervals: list[ac.Interval], code: int, code_bits: int,
                        num_tokens: int) -> np.ndarray:
    # needed[k]: fewest leading code bits whose block lies inside I_k, so that a decoder holding
    # only those bits determines the first k symbols. Nested intervals make it nondecreasing.
    needed = [0]
    m = 0
    for interval in intervals[1:]:
      while not ac.block_inside(interval, code >> (code_bits - m), m):
        m += 1
      needed.append(m)
    return self._symbols_from_needed(np.asarray(needed), num_tokens)

  def decode_prefix(self, tokens: np.ndarray) -> np.ndarray:
    """Decodes the leading symbols that `tokens` determine, e.g. of a trimmed M2 example.

    Returns exactly x[:encoded.symbols_at_token[t]] for the first t tokens of an encoding of x.
    """
    bits = bit_tokens.tokens_to_bits(tokens, self.token_bits)
    if len(bits) < LENGTH_HEADER_BITS:
      return np.zeros(0, sym.SYMBOL_DTYPE)
    count = bit_tokens.bits_to_int(bits[:LENGTH_HEADER_BITS])
    code_bits = len(bits) - LENGTH_HEADER_BITS
    code = bit_tokens.bits_to_int(bits[LENGTH_HEADER_BITS:])
    p = self.model.precision_bits
    # Each symbol costs a minimum number of bits, so a corrupt header cannot make us allocate
    # or loop more than the code could possibly hold.
    count = min(count, eiw.max_symbols_per_window(code_bits, p))
    if self.coder == "compiled":
      return self._decode_prefix_compiled(bits, count, code_bits)
    interval = ac.initial_interval(p)
    out = np.zeros(count, sym.SYMBOL_DTYPE)
    lockstep = getattr(self.model, "lockstep", None)
    session = lockstep(1) if lockstep is not None else None
    for i in range(count):
      if session is not None:
        cdf = session.step(np.array([out[i - 1]]) if i else None)[0]
      else:
        cdf = self.model.cdf(out[:i])
      s = ac.block_child(interval, cdf, code, code_bits, p)
      if s is None:
        return out[:i]
      out[i] = s
      interval = ac.narrow(interval, cdf, s, p)
    return out

  def _decode_prefix_compiled(self, bits: np.ndarray, count: int, code_bits: int) -> np.ndarray:
    decoder = batch_coder.WindowDecoderBatch(
        bits, np.array([LENGTH_HEADER_BITS]), np.array([code_bits]), np.array([count]),
        self.model.precision_bits, compiled_coder.MODE_AC, symbols_cap=count + 1)
    cdf = batch_coder.fixed_cdf(self.model)
    lockstep = getattr(self.model, "lockstep", None)
    if cdf is not None:
      decoder.run_static(cdf)
    elif lockstep is not None:
      session = lockstep(1)
      previous = None
      while decoder.status[0] == compiled_coder.RUNNING:
        decoder.feed(session.step(previous))
        k = decoder.state[0, 4]
        previous = np.array([decoder.out[0, k - 1]]) if k else None
    else:
      decoder.run(self.model)
    decoder.raise_first_error()
    return decoder.symbols(0)

  def decode(self, tokens: np.ndarray) -> np.ndarray:
    bits_available = len(tokens) * self.token_bits
    if bits_available < LENGTH_HEADER_BITS:
      raise eiw.DecodeError(f"an AC stream starts with a {LENGTH_HEADER_BITS}-bit length header")
    count = bit_tokens.bits_to_int(
        bit_tokens.tokens_to_bits(tokens, self.token_bits)[:LENGTH_HEADER_BITS])
    out = self.decode_prefix(tokens)
    if len(out) != count:
      raise eiw.DecodeError(f"code ends after {len(out)} of {count} symbols: truncated or corrupt")
    return out
