"""Equal-info windows: text coded in segments of exactly b bits, model and coder reset per window.

Encoding (Lester et al., 2024): starting from an empty context and the interval [0, 1), add
symbols one by one while the interval still holds a b-bit block; the first symbol that would not
fit ends the window (greedy: a symbol whose code adds no bits is included). The window is written
as one b-bit code and the next window starts from scratch with the next symbol.

The decoder sees only the b bits. Two closing rules say which b-bit code is written:

`paper`: the minimal code of the window's interval, padded with zero bits to b bits. The decoder
  retraces the symbols whose child interval contains the code's block and returns the longest
  prefix whose own padded minimal code equals the window's bits. Ambiguous: a longer string can
  share the padded code (the paper decoded 99.4% of sequences); kept as an option to measure it.

`unambiguous` (default): the decoder stops after k >= 1 symbols as soon as either
  (a) the code is the *lowest* b-bit block of the k-symbol interval I_k (written T(I_k)), or
  (b) the code's block lies in no child of I_k (it straddles a child boundary or lies in the
      coder's remainder), so no next symbol is determined.
  Otherwise the block lies in exactly one child and that symbol is decoded. Every rule input is
  a function of the code and the symbols decoded so far, so decoding is deterministic; it ends
  because intervals shrink geometrically (arithmetic_coder invariants) until (b) must hold.
  The encoder, having greedily gathered K symbols, writes for the largest k <= K (trying K first)
  a code d with d inside I_k, d == T(I_k) or d satisfying (b) under the CDF that follows those k
  symbols, and d != T(I_j) for every 1 <= j < k (so the decoder does not stop early); it picks
  the smallest such d. Fallback, and why it always terminates: for k = 1 the choice
  d = T(I_1) is always valid (there is no j < 1 to collide with) and exists because b >= P and
  the first symbol's interval is a union of aligned 2**-P blocks. So every window holds at least
  one symbol and the example is consumed in at most len(symbols) windows. Backing off below the
  greedy K ("backoff") is rare on text; it happens when I_K sits at the very bottom of an
  earlier I_j with no straddling block (e.g. runs of the lowest symbol, or extreme CDFs).
  Decoded windows are correct by construction (100%), at a small compression cost measured in
  the README.

The encoder is a step machine (`EqualInfoEncoderState`): it asks for the CDF after its current
context, one step at a time, so a batched engine can drive many rows at once; `encode_windows`
and `decode_windows` are the one-row loops.
"""
from __future__ import annotations

import collections
import dataclasses
import enum
import math
from typing import Sequence

import numpy as np

from neural_compression.coding import arithmetic_coder as ac
from neural_compression.coding import cdf_models
from neural_compression import symbols as sym


class ClosingRule(str, enum.Enum):
  """Which b-bit code closes a window (see module docstring)."""
  UNAMBIGUOUS = "unambiguous"
  PAPER = "paper"


class DecodeError(ValueError):
  """A code that no window could have produced under the given rule."""


def check_window_bits(window_bits: int, precision_bits: int) -> None:
  """Raises ValueError unless b >= P (so one symbol always fits) and b <= 4096 (bits)."""
  cdf_models.check_precision_bits(precision_bits)
  if not precision_bits <= window_bits <= 4096:
    raise ValueError(f"window_bits b={window_bits} must be >= precision_bits P={precision_bits} "
                     "(any single symbol must fit in one window) and <= 4096")


def max_symbols_per_window(window_bits: int, precision_bits: int) -> int:
  """Upper bound on symbols in one b-bit window (each costs >= -log2(1 - 256/2**P) bits)."""
  min_cost = -math.log2(1 - (sym.NUM_SYMBOLS - 1) / (1 << precision_bits))
  return int(window_bits / min_cost) + 2


@dataclasses.dataclass(frozen=True)
class Window:
  """One closed window: its b-bit code and how many symbols it holds (bits, symbols)."""
  code: int
  num_symbols: int
  backed_off: int  # symbols given back below the greedy count (0 almost always)


def _straddling_codes(interval: ac.Interval, cdf: Sequence[int], window_bits: int,
                      precision_bits: int) -> list[int]:
  """Returns, ascending, the b-bit codes inside `interval` that lie in no child under `cdf`."""
  lo, width, scale = interval
  if scale <= window_bits:
    return []  # blocks no larger than a unit never straddle integer boundaries
  shift = scale - window_bits
  u = 1 << shift
  base = lo >> shift
  lo_m = lo - (base << shift)  # lo's offset inside its block, < u
  # Offsets stay below 2**(R+2), so int64 is exact here even though lo is unbounded.
  r = width >> precision_bits
  edges = lo_m + r * np.asarray(cdf[1:], dtype=np.int64)  # children's upper edges
  block = edges // u
  inside = (edges % u != 0) & (block * u >= lo_m) & ((block + 1) * u <= lo_m + width)
  codes = {base + c for c in block[inside].tolist()}
  rem_block = -(-(lo_m + r * (1 << precision_bits)) // u)  # first block wholly in the remainder
  if (rem_block + 1) * u <= lo_m + width:
    codes.add(base + int(rem_block))
  return sorted(codes)


class EqualInfoEncoderState:
  """Encodes one symbol sequence into b-bit windows, driven one CDF at a time.

  Protocol: while not `done`: feed(cdf of the next symbol after `context()`). Then `windows`.
  """

  def __init__(self, symbols: np.ndarray, window_bits: int, precision_bits: int,
               rule: ClosingRule = ClosingRule.UNAMBIGUOUS):
    check_window_bits(window_bits, precision_bits)
    self._symbols = sym.validate_symbols(symbols)
    self._symbol_list = self._symbols.tolist()
    self._b = window_bits
    self._p = precision_bits
    self._rule = ClosingRule(rule)
    self._pos = 0  # first symbol of the open window
    self.windows: list[Window] = []
    self._reset()

  def _reset(self) -> None:
    self._intervals = [ac.initial_interval(self._p)]  # I_0..I_k of the open window
    self._lowest: list[int | None] = [None]  # T(I_j), j >= 1
    self._cdfs: list[np.ndarray] = []  # CDF after j symbols, j = 0..k-1 (k after a failed push)

  @property
  def done(self) -> bool:
    return self._pos >= len(self._symbol_list)

  @property
  def window_start(self) -> int:
    """Index of the open window's first symbol in the sequence."""
    return self._pos

  def context(self) -> np.ndarray:
    """The symbols of the open window so far: the model's whole input (windows reset M1)."""
    return self._symbols[self._pos:self._pos + len(self._intervals) - 1]

  def feed(self, cdf: np.ndarray) -> None:
    """Consumes the CDF after `context()`: adds the next symbol or closes the window."""
    if self.done:
      raise RuntimeError("the sequence is fully encoded")
    cdf = np.asarray(cdf, np.int64)
    k = len(self._intervals) - 1
    self._cdfs.append(cdf)
    nxt = self._pos + k
    if nxt < len(self._symbol_list):
      child = ac.narrow(self._intervals[-1], cdf, self._symbol_list[nxt], self._p)
      lowest = ac.lowest_block(child, self._b)
      if lowest is not None:
        self._intervals.append(child)
        self._lowest.append(lowest)
        return
    if k == 0:
      raise AssertionError("b >= P guarantees the first symbol fits")  # proof in module doc
    self._close(k)

  def _close(self, greedy: int) -> None:
    if self._rule is ClosingRule.PAPER:
      interval = self._intervals[greedy]
      n = ac.minimal_code_length(interval)
      code = ac.lowest_block(interval, n) << (self._b - n)
      self._emit(code, greedy, greedy)
      return
    # excluded[d] counts the j < k with T(I_j) == d; walking k down removes T(I_{k-1}).
    excluded = collections.Counter(self._lowest[1:greedy])
    for k in range(greedy, 0, -1):
      code = self._unambiguous_code(k, excluded)
      if code is not None:
        self._emit(code, k, greedy)
        return
      if k > 1:
        excluded[self._lowest[k - 1]] -= 1
    raise AssertionError("k = 1 always admits T(I_1)")  # proof in module doc

  def _unambiguous_code(self, k: int, excluded: collections.Counter) -> int | None:
    lowest = self._lowest[k]
    if not excluded[lowest]:
      return lowest
    for code in _straddling_codes(self._intervals[k], self._cdfs[k], self._b, self._p):
      if not excluded[code]:
        return code
    return None

  def _emit(self, code: int, k: int, greedy: int) -> None:
    self.windows.append(Window(code=code, num_symbols=k, backed_off=greedy - k))
    self._pos += k
    self._reset()


class EqualInfoDecoderState:
  """Decodes one b-bit window code, driven one CDF at a time.

  Protocol: while not `done`: feed(cdf of the next symbol after `context()`). Then `symbols`.
  """

  def __init__(self, code: int, window_bits: int, precision_bits: int,
               rule: ClosingRule = ClosingRule.UNAMBIGUOUS):
    check_window_bits(window_bits, precision_bits)
    if not 0 <= code < (1 << window_bits):
      raise DecodeError(f"a window code has {window_bits} bits, got {code}")
    self._code = code
    self._b = window_bits
    self._p = precision_bits
    self._rule = ClosingRule(rule)
    self._interval = ac.initial_interval(precision_bits)
    self._decoded: list[int] = []
    self._paper_match = 0  # paper rule: longest prefix whose padded minimal code equals the code
    self._limit = max_symbols_per_window(window_bits, precision_bits)
    self.done = False

  def context(self) -> np.ndarray:
    return np.asarray(self._decoded, dtype=sym.SYMBOL_DTYPE)

  @property
  def symbols(self) -> np.ndarray:
    """The window's decoded symbols (valid once `done`)."""
    if not self.done:
      raise RuntimeError("window not fully decoded")
    if self._rule is ClosingRule.PAPER:
      if self._paper_match == 0:
        raise DecodeError("no prefix on the code's path has this padded code (paper rule)")
      return self.context()[:self._paper_match]
    return self.context()

  def feed(self, cdf: np.ndarray) -> None:
    """Consumes the CDF after `context()`: decodes one more symbol or finishes the window."""
    if self.done:
      raise RuntimeError("window already decoded")
    cdf = np.asarray(cdf, np.int64)
    s = ac.block_child(self._interval, cdf, self._code, self._b, self._p)
    if s is None:
      if not self._decoded:
        raise DecodeError("the code determines no first symbol")
      self.done = True
      return
    if len(self._decoded) >= self._limit:
      raise DecodeError(f"window exceeds {self._limit} symbols: not a valid code")
    self._interval = ac.narrow(self._interval, cdf, s, self._p)
    self._decoded.append(s)
    if self._rule is ClosingRule.PAPER:
      n = ac.minimal_code_length(self._interval)
      if n <= self._b and ac.lowest_block(self._interval, n) << (self._b - n) == self._code:
        self._paper_match = len(self._decoded)
    elif ac.lowest_block(self._interval, self._b) == self._code:
      self.done = True  # rule (a): no CDF needed to stop here


def encode_windows(symbols: np.ndarray, model: cdf_models.CdfModel, window_bits: int,
                   rule: ClosingRule = ClosingRule.UNAMBIGUOUS) -> list[Window]:
  """Encodes a symbol sequence into equal-info windows of `window_bits` bits each."""
  state = EqualInfoEncoderState(symbols, window_bits, model.precision_bits, rule)
  while not state.done:
    state.feed(model.cdf(state.context()))
  return state.windows


def decode_window(code: int, model: cdf_models.CdfModel, window_bits: int,
                  rule: ClosingRule = ClosingRule.UNAMBIGUOUS) -> np.ndarray:
  """Decodes the symbols of one b-bit window code."""
  state = EqualInfoDecoderState(code, window_bits, model.precision_bits, rule)
  while not state.done:
    state.feed(model.cdf(state.context()))
  return state.symbols


def decode_windows(codes: Sequence[int], model: cdf_models.CdfModel, window_bits: int,
                   rule: ClosingRule = ClosingRule.UNAMBIGUOUS) -> np.ndarray:
  """Decodes consecutive window codes into one symbol sequence."""
  parts = [decode_window(c, model, window_bits, rule) for c in codes]
  return np.concatenate(parts) if parts else np.zeros(0, sym.SYMBOL_DTYPE)
