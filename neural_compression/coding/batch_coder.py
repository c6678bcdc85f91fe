"""Batched drivers of the compiled coder: many rows per call, any model.

A driver owns the numpy state of many rows (examples to encode, windows to decode) and runs the
compiled kernels (`compiled_coder`) on them:

  * under a context-free model (one fixed CDF, e.g. StaticAC's unigram) the whole batch runs in
    one compiled call (`run_static`);
  * under any other model, one step at a time: `step(session)` asks a *context session* for the
    CDFs after every active row's context, in one batched call, then feeds them all in one
    compiled call. A row's context is a slice of one flat symbol array (start, length), so a
    model can follow each row incrementally (the M1 engine walks its prefix trie one symbol per
    step, see `ContextSession`).

The results are the reference coder's, bit for bit (tests/test_compiled_coder.py drives both).
"""
from __future__ import annotations

import numpy as np

from neural_compression.coding import cdf_models
from neural_compression.coding import equal_info_windows as eiw
from neural_compression import symbols as sym
from neural_compression.coding import compiled_coder as cc

_RULES = {eiw.ClosingRule.UNAMBIGUOUS: cc.RULE_UNAMBIGUOUS, eiw.ClosingRule.PAPER: cc.RULE_PAPER}


class ContextSession:
  """CDFs after many contexts given as slices of one flat symbol array (the default session).

  `cdfs(symbols, rows, starts, lengths)` returns (ready, cdfs): `ready` indexes the rows whose
  CDF is given, cdfs[j] ([len(ready), NUM_SYMBOLS + 1] int64) the CDF after
  symbols[starts[i]:starts[i] + lengths[i]] for i = ready[j]. A model may hold some rows back
  for a later step (to batch their computation) but must give at least one row per call.
  `rows` name the caller's rows (stable across steps) so that a model can keep per-row state:
  a row whose start is unchanged and whose length grew extends its previous context. This
  default answers every row through `model.cdfs`.
  """

  def __init__(self, model: cdf_models.CdfModel, num_rows: int):
    self.model = model
    self.num_rows = num_rows

  def cdfs(self, symbols: np.ndarray, rows: np.ndarray, starts: np.ndarray,
           lengths: np.ndarray) -> np.ndarray:
    contexts = [symbols[s:s + n] for s, n in zip(starts.tolist(), lengths.tolist())]
    return (np.arange(len(rows)),
            np.ascontiguousarray(self.model.cdfs(contexts), dtype=np.int64))


def context_session(model: cdf_models.CdfModel, num_rows: int) -> ContextSession:
  """The model's own session if it has one (`context_session(num_rows)`), else the default."""
  make = getattr(model, "context_session", None)
  return make(num_rows) if make is not None else ContextSession(model, num_rows)


def fixed_cdf(model: cdf_models.CdfModel) -> np.ndarray | None:
  """The model's one CDF if it is context-free (FixedCdfModel), else None."""
  if isinstance(model, cdf_models.FixedCdfModel):
    return np.ascontiguousarray(model.cdf(None), dtype=np.int64)
  return None


def _concat(batch: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  offsets = np.zeros(len(batch) + 1, np.int64)
  offsets[1:] = np.cumsum([len(x) for x in batch])
  flat = np.concatenate(batch).astype(sym.SYMBOL_DTYPE) if batch else np.zeros(0, sym.SYMBOL_DTYPE)
  return flat, offsets


class WindowEncoderBatch:
  """Equal-info window encoders for many examples (reference: EqualInfoEncoderState)."""

  def __init__(self, batch: list[np.ndarray], window_bits: int, precision_bits: int,
               rule: eiw.ClosingRule = eiw.ClosingRule.UNAMBIGUOUS):
    eiw.check_window_bits(window_bits, precision_bits)
    batch = [sym.validate_symbols(x) for x in batch]
    self.b, self.p, self.rule = window_bits, precision_bits, _RULES[eiw.ClosingRule(rule)]
    self.symbols, self.offsets = _concat(batch)
    n = len(batch)
    longest = max((len(x) for x in batch), default=0)
    # A window holds at most min(example length, max_symbols_per_window) symbols.
    cap = min(longest, eiw.max_symbols_per_window(window_bits, precision_bits)) + 2
    self.state = np.zeros((n, 7), np.int64)
    self.hi = np.zeros((n, window_bits + 64), np.uint8)
    self.step_counts = np.zeros((n, cap, 2), np.int64)
    self.excluded = np.zeros((n, cap), np.bool_)
    self.strad = np.full((n, cap), -1, np.int64)
    self.status = np.where(np.diff(self.offsets) > 0, cc.RUNNING, cc.DONE).astype(np.int64)
    # Every window writes b bits and holds >= 1 symbol; the text needs at most about P + 1 bits
    # per symbol. Sized for the common case at once (zeroed pages cost nothing until written):
    # growing copies everything written so far.
    self.out_bits = np.zeros(
        1024 + 2 * window_bits * n
        + min(window_bits, 2 * (precision_bits + 1)) * len(self.symbols), np.uint8)
    self.out_pos = 0
    self.win_row = np.zeros(max(64, len(self.symbols) // 2), np.int64)
    self.win_nsym = np.zeros_like(self.win_row)
    self.win_back = np.zeros_like(self.win_row)
    self.win_count = 0
    cc.encoder_init(self.state, self.hi, np.arange(n, dtype=np.int64), precision_bits)

  def make_space(self, more_windows: int) -> None:
    """Grows the output arrays to take `more_windows` more windows."""
    self._grow(more_windows)

  def _grow(self, more_windows: int) -> None:
    if self.out_pos + more_windows * self.b > len(self.out_bits):
      grown = np.zeros(2 * len(self.out_bits) + more_windows * self.b, np.uint8)
      grown[:self.out_pos] = self.out_bits[:self.out_pos]
      self.out_bits = grown
    if self.win_count + more_windows > len(self.win_row):
      size = 2 * len(self.win_row) + more_windows
      for name in ("win_row", "win_nsym", "win_back"):
        old = getattr(self, name)
        new = np.zeros(size, np.int64)
        new[:self.win_count] = old[:self.win_count]
        setattr(self, name, new)

  def check(self) -> None:
    """Raises if a row failed (impossible for b >= P: a guard on the proof)."""
    self._check()

  def _check(self) -> None:
    if np.any(self.status == cc.ERR_FIRST_SYMBOL_DOES_NOT_FIT):
      raise AssertionError("b >= P guarantees the first symbol fits")  # proof in eiw docstring

  def active_rows(self) -> np.ndarray:
    """Indices of the rows still encoding."""
    return np.flatnonzero(self.status == cc.RUNNING).astype(np.int64)

  def run_static(self, cdf: np.ndarray) -> None:
    """Encodes every row to the end under one fixed CDF (one compiled call per buffer growth)."""
    cdf = np.ascontiguousarray(cdf, dtype=np.int64)
    while True:
      self.out_pos, self.win_count, flag = cc.encoder_run_static(
          cdf, self.symbols, self.offsets, self.state, self.hi, self.step_counts, self.excluded,
          self.strad, self.out_bits, self.out_pos, self.win_row, self.win_nsym, self.win_back,
          self.win_count, self.status, self.b, self.p, self.rule)
      self._check()
      if flag != cc.NEED_SPACE:
        return
      self._grow(max(64, self.win_count))

  def step(self, session: ContextSession) -> bool:
    """One model step for every active row; returns whether any row is still running."""
    rows = self.active_rows()
    if not len(rows):
      return False
    ctx = np.zeros((len(rows), 2), np.int64)
    cc.encoder_contexts(rows, self.symbols, self.offsets, self.state, ctx)
    ready, cdfs = session.cdfs(self.symbols, rows, ctx[:, 0], ctx[:, 1])
    rows = rows[ready]
    self._grow(len(rows))
    self.out_pos, self.win_count = cc.encoder_feed(
        rows, cdfs, self.symbols, self.offsets, self.state, self.hi, self.step_counts,
        self.excluded, self.strad, self.out_bits, self.out_pos, self.win_row, self.win_nsym,
        self.win_back, self.win_count, self.status, self.b, self.p, self.rule)
    self._check()
    return True

  def run(self, model: cdf_models.CdfModel) -> None:
    """Encodes every row to the end: statically if the model is context-free, through the
    model's own compiled loop if it has one (`run_window_encoders`), else stepwise."""
    cdf = fixed_cdf(model)
    if cdf is not None:
      self.run_static(cdf)
      return
    runner = getattr(model, "run_window_encoders", None)
    if runner is not None:
      runner(self)
      self._check()
      return
    session = context_session(model, len(self.status))
    while self.step(session):
      pass

  def row_windows(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per row: (window bits, b per window concatenated; symbols per window; back-offs)."""
    rows = self.win_row[:self.win_count]
    if np.all(rows[1:] >= rows[:-1]):  # rows ran one after another (run_static): slices
      bounds = np.searchsorted(rows, np.arange(len(self.status) + 1))
      return [(self.out_bits[lo * self.b:hi * self.b].copy(), self.win_nsym[lo:hi].copy(),
               self.win_back[lo:hi].copy()) for lo, hi in zip(bounds[:-1], bounds[1:])]
    order = np.argsort(rows, kind="stable")
    bounds = np.searchsorted(rows[order], np.arange(len(self.status) + 1))
    codes = self.out_bits[:self.win_count * self.b].reshape(self.win_count, self.b)
    out = []
    for i in range(len(self.status)):
      idx = order[bounds[i]:bounds[i + 1]]
      out.append((codes[idx].reshape(-1), self.win_nsym[idx], self.win_back[idx]))
    return out


class WindowDecoderBatch:
  """Decoders of many b-bit codes (windows, or AC codes in MODE_AC), given as bit slices."""

  def __init__(self, code_bits: np.ndarray, code_off: np.ndarray, code_len: np.ndarray,
               limits: np.ndarray, precision_bits: int, mode: int, symbols_cap: int = 64):
    self.p, self.mode = precision_bits, mode
    self.code_bits = np.ascontiguousarray(code_bits, dtype=np.uint8)
    self.code_off = np.ascontiguousarray(code_off, dtype=np.int64)
    self.code_len = np.ascontiguousarray(code_len, dtype=np.int64)
    self.limits = np.ascontiguousarray(limits, dtype=np.int64)
    n = len(self.code_off)
    self.state = np.zeros((n, 7), np.int64)
    self.out = np.zeros((n, max(2, symbols_cap)), sym.SYMBOL_DTYPE)
    running = np.ones(n, np.bool_) if mode != cc.MODE_AC else self.limits > 0
    self.status = np.where(running, cc.RUNNING, cc.DONE).astype(np.int64)
    cc.decoder_init(self.state, self.code_bits, self.code_off, self.code_len,
                    np.arange(n, dtype=np.int64), precision_bits)

  def _grow(self) -> None:
    grown = np.zeros((self.out.shape[0], 2 * self.out.shape[1]), sym.SYMBOL_DTYPE)
    grown[:, :self.out.shape[1]] = self.out
    self.out = grown

  def active_rows(self) -> np.ndarray:
    """Indices of the rows still decoding."""
    return np.flatnonzero(self.status == cc.RUNNING).astype(np.int64)

  def run_static(self, cdf: np.ndarray) -> None:
    """Decodes every row to the end under one fixed CDF (one compiled call per growth)."""
    cdf = np.ascontiguousarray(cdf, dtype=np.int64)
    while cc.decoder_run_static(cdf, self.code_bits, self.code_off, self.code_len, self.state,
                                self.out, self.status, self.limits, self.p,
                                self.mode) == cc.NEED_SPACE:
      self._grow()

  def feed(self, cdfs: np.ndarray) -> None:
    """Feeds cdfs[i] to the i-th active row (e.g. from a lockstep model session)."""
    rows = self.active_rows()
    if self.state[rows, 4].max() >= self.out.shape[1]:
      self._grow()
    cc.decoder_feed(rows, np.ascontiguousarray(cdfs, dtype=np.int64), self.code_bits,
                    self.code_off, self.code_len, self.state, self.out, self.status, self.limits,
                    self.p, self.mode)

  def step(self, session: ContextSession) -> bool:
    """One model step for every active row; returns whether any row is still running."""
    rows = self.active_rows()
    if not len(rows):
      return False
    if self.state[rows, 4].max() >= self.out.shape[1]:
      self._grow()
    width = self.out.shape[1]
    flat = self.out.reshape(-1)
    ready, cdfs = session.cdfs(flat, rows, rows * width, self.state[rows, 4].copy())
    rows = rows[ready]
    cc.decoder_feed(rows, cdfs, self.code_bits, self.code_off, self.code_len, self.state,
                    self.out, self.status, self.limits, self.p, self.mode)
    return True

  def make_space(self, _: int = 0) -> None:
    """Doubles the decoded-symbol columns of every row."""
    self._grow()

  def check(self) -> None:
    """Row errors are raised by raise_first_error once all rows stopped."""

  def run(self, model: cdf_models.CdfModel) -> None:
    """Decodes every row to the end (statically, through the model's compiled loop
    `run_window_decoders`, or stepwise)."""
    cdf = fixed_cdf(model)
    if cdf is not None:
      self.run_static(cdf)
      return
    runner = getattr(model, "run_window_decoders", None)
    if runner is not None:
      runner(self)
      return
    session = context_session(model, len(self.status))
    while self.step(session):
      pass

  def symbols(self, row: int) -> np.ndarray:
    """The symbols row `row` decoded (all of them; the paper rule keeps a prefix)."""
    return self.out[row, :self.state[row, 4]].copy()

  def raise_first_error(self, limit_for_message: int | None = None) -> None:
    """Raises the DecodeError the reference's lockstep loop would raise first, if any."""
    bad = np.flatnonzero(self.status >= cc.ERR_NO_FIRST_SYMBOL)
    if not len(bad):
      return
    # In lockstep, a row errs at step k (its symbol count): the earliest step, then lowest row.
    row = bad[np.lexsort((bad, self.state[bad, 4]))[0]]
    status = self.status[row]
    if status == cc.ERR_NO_FIRST_SYMBOL:
      raise eiw.DecodeError("the code determines no first symbol")
    if status == cc.ERR_TOO_MANY_SYMBOLS:
      raise eiw.DecodeError(f"window exceeds {limit_for_message} symbols: not a valid code")
    raise ValueError("the code's block is not inside the interval")


def decode_window_bits(bits: np.ndarray, count: int, model: cdf_models.CdfModel, window_bits: int,
                       rule: eiw.ClosingRule = eiw.ClosingRule.UNAMBIGUOUS) -> np.ndarray:
  """Decodes the first `count` b-bit windows of a bit array into one symbol sequence."""
  p = model.precision_bits
  eiw.check_window_bits(window_bits, p)
  rule = eiw.ClosingRule(rule)
  limit = eiw.max_symbols_per_window(window_bits, p)
  dec = WindowDecoderBatch(bits, np.arange(count, dtype=np.int64) * window_bits,
                           np.full(count, window_bits, np.int64), np.full(count, limit, np.int64),
                           p, _RULES[rule], symbols_cap=min(limit + 1, 32))
  dec.run(model)
  dec.raise_first_error(limit)
  counts = dec.state[:, 4]
  if rule is eiw.ClosingRule.PAPER:
    counts = dec.state[:, 5]
    if np.any(counts == 0):
      raise eiw.DecodeError("no prefix on the code's path has this padded code (paper rule)")
  flat = np.empty(int(counts.sum()), sym.SYMBOL_DTYPE)
  cc.gather_prefixes(dec.out, np.ascontiguousarray(counts), flat)  # the windows in order
  return flat


class ACEncoderBatch:
  """AC / StaticAC encoders for many examples: one interval per example, no resets."""

  def __init__(self, batch: list[np.ndarray], precision_bits: int):
    batch = [sym.validate_symbols(x) for x in batch]
    self.p = precision_bits
    self.lengths = np.array([len(x) for x in batch], np.int64)
    self.symbols, self.offsets = _concat(batch)
    n = len(batch)
    self.state = np.zeros((n, 7), np.int64)
    self._hi = self._trace = None  # every row's, allocated by the stepwise path only
    self._finished = None  # run_static's (codes, code_off, code_len, needed)
    cc.ac_init(self.state, np.arange(n, dtype=np.int64), precision_bits)

  def _bit_rows(self, rows: int) -> tuple[np.ndarray, np.ndarray]:
    # A row's code and hi bits are at most (P + 1) bits per symbol (a symbol's renormalization
    # shift is at most P) above the initial scale; the trace holds (low, width, scale) of I_k.
    longest = int(self.lengths.max()) if len(self.lengths) else 0
    return (np.zeros((rows, (self.p + 1) * longest + 64), np.uint8),
            np.zeros((rows, longest + 1, 3), np.int64))

  def run_static(self, cdf: np.ndarray) -> None:
    """Encodes and finishes every row under one fixed CDF in one compiled call."""
    hi, trace = self._bit_rows(1)  # shared by the rows, one after another
    code_off = np.zeros(len(self.lengths) + 1, np.int64)
    code_off[1:] = np.cumsum((self.p + 1) * self.lengths + 64)
    codes = np.zeros(int(code_off[-1]), np.uint8)
    code_len = np.zeros(len(self.lengths), np.int64)
    needed = np.zeros(len(self.symbols) + len(self.lengths), np.int64)
    cc.ac_run_static(np.ascontiguousarray(cdf, dtype=np.int64), self.symbols, self.offsets,
                     self.state, hi, trace, codes, code_off, code_len, needed, self.p)
    self._finished = codes, code_off, code_len, needed

  def feed(self, position: int, cdfs: np.ndarray) -> None:
    """Narrows every row longer than `position` by its symbol there; cdfs[i] is row i's CDF."""
    if self._hi is None:
      self._hi, self._trace = self._bit_rows(len(self.lengths))
    rows = np.flatnonzero(self.lengths > position).astype(np.int64)
    if len(rows):
      cc.ac_feed(rows, np.ascontiguousarray(cdfs[rows], dtype=np.int64), self.symbols,
                 self.offsets, self.state, self._hi, self._trace, self.p)

  def finish(self, row: int) -> tuple[np.ndarray, np.ndarray]:
    """(the minimal code's bits, needed[k] for k = 0..len): see compiled_coder.ac_finish."""
    count = int(self.lengths[row])
    if self._finished is not None:
      codes, code_off, code_len, needed = self._finished
      first = int(self.offsets[row]) + row
      return (codes[code_off[row]:code_off[row] + code_len[row]].copy(),
              needed[first:first + count + 1].copy())
    if self._hi is None:  # no symbol fed (empty rows)
      self._hi, self._trace = self._bit_rows(len(self.lengths))
    code = np.zeros(int(self.state[row, 2]) + 2, np.uint8)
    needed = np.zeros(count + 1, np.int64)
    n = cc.ac_finish(row, self.state, self._hi, self._trace, code, needed, self.p)
    return code[:n], needed
