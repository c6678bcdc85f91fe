"""AC's fast path: many whole sequences advanced one position per step through one KV buffer."""
from __future__ import annotations

import numpy as np

from neural_compression.m1 import numpy_inference as ni


def engine_reads_in_place(engine) -> bool:
  """Whether the engine's forward_gather reads int8 storage in place (the compiled backend)."""
  return engine.backend.name == "compiled"


class LockstepSession:
  """Advances many whole sequences one position per step, for AC (no resets, long contexts).

  Every row moves in lockstep, so the attention history of all rows is the same slice of one
  persistent buffer and no per-step gathering is needed. Position i attends to positions
  max(0, i - max_context + 1) .. i (the engine's window) exactly as through the prefix cache, so the CDFs are identical
  to the prefix-cache path (a test checks it).
  """

  def __init__(self, model, rows: int):
    self.model = model
    self.engine = model.engine
    c = self.engine.config
    self._window = self.engine.max_context
    self._cap = 2 * self._window
    shape = (rows, self._cap, c.num_heads, c.head_dim)
    # The compiled backend attends over the int8 buffer in place (engine.forward_gather by
    # slot index); numpy and JAX take float32 slices of it.
    self._in_place = engine_reads_in_place(self.engine)
    dtype = np.int8 if self._in_place else np.float32
    self._k = [np.zeros(shape, dtype) for _ in range(c.num_layers)]
    self._v = [np.zeros(shape, dtype) for _ in range(c.num_layers)]
    self._start = 0  # absolute position of buffer slot 0
    self.position = 0  # absolute position of the next input token
    self.rows = rows

  def step(self, tokens: np.ndarray | None) -> np.ndarray:
    """Feeds one input token per row (None: BOS for every row, the first step; then each coded
    symbol); returns the CDFs [rows, NUM_SYMBOLS + 1] of the symbol that follows."""
    if tokens is None:
      tokens = np.full(self.rows, ni.BOS, np.int64)
    if self.position - self._start == self._cap:  # slide: keep the last window - 1 slots
      keep = self._window - 1
      for buf in self._k + self._v:
        buf[:, :keep] = buf[:, self._cap - keep:]
      self._start = self.position - keep
    lo = max(self._start, self.position - (self._window - 1)) - self._start
    hi = self.position - self._start
    hist_len = np.full(self.rows, hi - lo, np.int64)
    tokens = np.asarray(tokens, np.int64)
    with self.model.blas_scope():
      if self._in_place:
        c = self.engine.config
        flat = lambda b: b.reshape(self.rows * self._cap, c.num_heads, c.head_dim)  # noqa: E731
        hist_idx = (np.arange(self.rows, dtype=np.int64)[:, None] * self._cap
                    + np.arange(lo, hi, dtype=np.int64)[None, :])
        new_k, new_v, cdfs = self.engine.forward_gather(
            tokens, [flat(b) for b in self._k], [flat(b) for b in self._v], hist_idx, hist_len)
      else:
        new_k, new_v, cdfs = self.engine.forward(
            tokens, [b[:, lo:hi] for b in self._k], [b[:, lo:hi] for b in self._v], hist_len)
    for buf, new in zip(self._k + self._v, list(new_k) + list(new_v)):
      buf[:, hi] = new
    self.position += 1
    return cdfs


