"""The exact M1 as a batched `CdfModel`: integer forward + compiled prefix cache + sessions.

`cdfs(contexts)` returns the CDFs after many window prefixes at once; `context_session(rows)`
follows many rows step by step (what the batched coder drives, see coding/batch_coder), so a
step costs one hash lookup per row plus one batched forward for the misses; `lockstep(rows)`
runs whole sequences for AC. Every window starts from the same empty context and short
prefixes recur all the time in text, so most steps are cache hits.

Process-wide settings stay as they were: the BLAS thread cap applies only while this engine
computes (`blas_scope`), and JAX's 64-bit mode only inside its backend's calls.
"""
from __future__ import annotations

import contextlib
import os

import numpy as np

from neural_compression.coding import cdf_models
from neural_compression import symbols as sym
from neural_compression.m1 import numpy_inference as ni
from neural_compression.m1.engine import cached_coding
from neural_compression.m1.engine import prefix_cache as pc
from neural_compression.m1.engine.checkpoint import context_length, load_exact_arrays
from neural_compression.m1.engine.integer_forward import ExactM1, NumpyBackend
from neural_compression.m1.engine.lockstep import LockstepSession
from neural_compression.methods import PRECISION_BITS

DEFAULT_CACHE_BYTES = 512 << 20  # ~235k prefixes of the shipped M1 (2.3 KB each)
DEFER_MIN_BATCH = 256  # misses gathered per forward call when rows can wait (see session)


class ExactM1Model(cdf_models.CdfModel):
  """`CdfModel` over the exact engine with a prefix-sharing KV cache (see module docstring)."""

  def __init__(self, engine: ExactM1, max_cache_bytes: int = DEFAULT_CACHE_BYTES,
               max_rows: int = 1024, blas_threads: int | None = 1,
               miss_batch: int | None = None):
    """Args:
      engine: the integer forward.
      max_cache_bytes: the prefix cache's budget in bytes (keys, values, CDFs, index); the least
        recently used prefixes are evicted beyond it.
      max_rows: new positions computed per forward call at most.
      miss_batch: misses a coder session gathers before one forward call (rows that missed
        wait meanwhile); default DEFER_MIN_BATCH on numpy, max_rows on JAX (a GPU wants large
        batches).
      blas_threads: BLAS threads while the engine computes (None: leave as is), restored after
        every call. The engine's GEMMs are small, and with more than one thread they spend their
        time synchronizing, badly so when other processes share the cores (measured 12x slower
        at 512 rows); scale out with one engine per core instead (Beam workers do). Results do
        not depend on it.
    """
    self.engine = engine
    c = engine.config
    self.cache = pc.PrefixCache(c.num_layers, c.num_heads, c.head_dim, sym.NUM_SYMBOLS + 1,
                                max_cache_bytes)
    self.max_rows = max_rows
    if miss_batch is None:
      miss_batch = max_rows if engine.backend.name == "jax" else DEFER_MIN_BATCH
    self.miss_batch = min(miss_batch, max_rows)
    self.blas_threads = blas_threads
    self._threadpools = None
    self._stats = {"hits": 0, "computed": 0, "calls": 0}

  @property
  def precision_bits(self) -> int:
    return PRECISION_BITS

  @property
  def stats(self) -> dict:
    """hits (rows served from the cache), computed (new positions), calls, evictions, nodes."""
    return dict(self._stats, evictions=self.cache.evictions, nodes=self.cache.num_nodes)

  def blas_scope(self):
    """Caps BLAS threads at `blas_threads` for the duration of a `with` block, then restores."""
    if self.blas_threads is None:
      return contextlib.nullcontext()
    if self._threadpools is None:
      import threadpoolctl
      self._threadpools = threadpoolctl.ThreadpoolController()
    return self._threadpools.limit(limits=self.blas_threads, user_api="blas")

  def cdf(self, context: np.ndarray) -> np.ndarray:
    return self.cdfs([context])[0]

  def cdfs(self, contexts) -> np.ndarray:
    """CDFs [len(contexts), NUM_SYMBOLS + 1] after each context (symbols of a segment)."""
    contexts = [np.asarray(c, dtype=sym.SYMBOL_DTYPE) for c in contexts]
    if not contexts:
      return np.zeros((0, sym.NUM_SYMBOLS + 1), np.int64)
    # Rows walking at once pin their whole paths: keep them to half the cache at most.
    room = self.cache.capacity // 2
    lengths = np.array([len(c) for c in contexts], np.int64)
    if len(contexts) > 1 and int(lengths.sum()) + len(contexts) > room:
      bounds = np.searchsorted(np.cumsum(lengths + 1), np.arange(room, int(lengths.sum())
                                                                 + len(contexts), room))
      parts = np.split(np.arange(len(contexts)), np.unique(np.maximum(bounds, 1)))
      return np.concatenate([self.cdfs([contexts[i] for i in part]) for part in parts
                             if len(part)])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    flat = np.concatenate(contexts).astype(sym.SYMBOL_DTYPE)
    rows = np.arange(len(contexts), dtype=np.int64)
    ready, cdfs = PrefixCacheSession(self, len(contexts), defer=False).cdfs(
        flat, rows, starts, lengths)
    return cdfs

  def context_session(self, num_rows: int) -> "PrefixCacheSession":
    """A session following `num_rows` rows step by step (coding.batch_coder's protocol); rows
    that miss the cache wait until enough misses for one efficient forward batch have
    gathered, while the others go on."""
    return PrefixCacheSession(self, num_rows, defer=True)

  def run_window_encoders(self, encoder) -> None:
    """Runs a coding.batch_coder.WindowEncoderBatch to the end through the prefix cache, all
    bookkeeping in one compiled loop between forward calls (cached_coding)."""
    self._run(encoder, lambda rows, cache, pending, min_batch: cached_coding.run_encoders(
        encoder.symbols, encoder.offsets, encoder.state, encoder.hi, encoder.step_counts,
        encoder.excluded, encoder.strad, encoder.out_bits, encoder.out_pos, encoder.win_row,
        encoder.win_nsym, encoder.win_back, encoder.win_count, encoder.status, encoder.b,
        encoder.p, encoder.rule, *rows, cache.meta, cache.valid, cache.table,
        cache.last_use, cache.stamp, cache.num_nodes, cache.room, cache.cdfs, pending,
        min_batch))

  def run_window_decoders(self, decoder) -> None:
    """Runs a coding.batch_coder.WindowDecoderBatch to the end through the prefix cache."""
    self._run(decoder, lambda rows, cache, pending, min_batch: cached_coding.run_decoders(
        decoder.code_bits, decoder.code_off, decoder.code_len, decoder.state, decoder.out,
        decoder.status, decoder.limits, decoder.p, decoder.mode, *rows, cache.meta, cache.valid,
        cache.table, cache.last_use, cache.stamp, cache.num_nodes, cache.room,
        cache.cdfs, pending, min_batch))

  def _run(self, batch, step) -> None:
    cache = self.cache
    n = len(batch.status)
    rows = (np.full(n, -1, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64),
            np.zeros(n, np.bool_))  # node, context start, context length, waited
    min_batch = self.miss_batch
    pending = np.zeros(n + min_batch, np.int64)
    if not cache.valid[pc.ROOT]:
      self.compute(np.array([pc.ROOT], np.int64))
    generation = cache.generation
    while True:
      if cache.generation != generation:  # another session's eviction renumbered the nodes
        rows[0][:] = -1
      self._stats["calls"] += 1
      out = step(rows, cache, pending, min_batch)
      reason = out[0]
      if isinstance(batch, _encoder_type()):
        batch.out_pos, batch.win_count = out[1], out[2]
        out = out[2:]
      cache.stamp, cache.num_nodes, num_pending, hits = out[1:]
      self._stats["hits"] += hits
      if num_pending:
        cache.pending.append(pending[:num_pending].copy())
      if reason == cached_coding.FINISHED:
        return
      if reason == cached_coding.NEED_FORWARD:
        self.flush()
      elif reason == cached_coding.NEED_SPACE:
        batch.make_space(n)
      elif reason == cached_coding.NEED_ROOM:
        self.flush()
        cache.make_room(n, rows[0])
      else:
        batch.check()
        raise AssertionError("a row failed without a reason")
      generation = cache.generation

  def flush(self) -> None:
    """Computes every cache node that a session created and is waiting for."""
    cache = self.cache
    if cache.pending:
      nodes = np.concatenate(cache.pending)
      cache.pending = []
      self.compute(nodes)

  def lockstep(self, rows: int) -> LockstepSession:
    """A session that runs `rows` whole sequences in lockstep (AC's fast path)."""
    return LockstepSession(self, rows)

  def compute(self, nodes: np.ndarray) -> None:
    """Runs the forward for new cache nodes (their parents computed), max_rows at a time."""
    cache = self.cache
    with self.blas_scope():
      for first in range(0, len(nodes), self.max_rows):
        part = nodes[first:first + self.max_rows]
        m = len(part)
        depth = cache.meta[part, 2]
        max_history = self.engine.max_context - 1
        t = int(min(depth.max(), max_history))
        hist_idx = np.full((m, t), cache.zero_slot, np.int64)
        hist_len = np.zeros(m, np.int64)
        tokens = np.zeros(m, np.int64)
        pc.history(part, cache.meta, max_history, hist_idx, hist_len, tokens, ni.BOS)
        # The compiled backend reads the nodes in place; numpy and JAX gather them first.
        new_k, new_v, cdfs = self.engine.forward_gather(tokens, cache.kv_k, cache.kv_v,
                                                        hist_idx, hist_len)
        cache.kv_k[:, part] = np.stack(new_k)
        cache.kv_v[:, part] = np.stack(new_v)
        cache.cdfs[part] = cdfs
        cache.valid[part] = True
        self._stats["computed"] += m


def _encoder_type():
  from neural_compression.coding import batch_coder
  return batch_coder.WindowEncoderBatch


class PrefixCacheSession:
  """Rows followed through the prefix cache (coding.batch_coder.ContextSession's protocol).

  A row whose start is unchanged and whose length grew extends its previous context (the
  batched coder guarantees it); its node is then found from the previous one. With `defer`,
  rows whose node is missing are held back (not in `ready`) until `min_batch` misses have
  gathered or no row could go on; the misses are then computed in one batch.
  """

  def __init__(self, model: ExactM1Model, num_rows: int, defer: bool = True):
    self.model = model
    self.cache = model.cache
    self.defer = defer
    self.min_batch = model.miss_batch
    self.row_node = np.full(num_rows, -1, np.int64)
    self.row_start = np.zeros(num_rows, np.int64)
    self.row_len = np.zeros(num_rows, np.int64)
    self.generation = self.cache.generation
    self._result = np.zeros(0, np.int64)
    self._misses = np.zeros(0, np.int64)

  def cdfs(self, symbols: np.ndarray, rows: np.ndarray, starts: np.ndarray,
           lengths: np.ndarray) -> np.ndarray:
    model, cache = self.model, self.cache
    model._stats["calls"] += 1  # pylint: disable=protected-access
    if not cache.valid[pc.ROOT]:
      model.compute(np.array([pc.ROOT], np.int64))
    if cache.generation != self.generation:  # an eviction renumbered the nodes
      self.row_node[:] = -1
    symbols = np.ascontiguousarray(symbols, dtype=sym.SYMBOL_DTYPE)
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    waiting = np.arange(len(rows))
    ready = np.ones(len(rows), np.bool_)
    cache.stamp += 1
    first_round = True
    while len(waiting):
      if cache.num_nodes + len(waiting) > cache.room:
        model.flush()  # eviction needs every node computed
        cache.make_room(len(waiting), self.row_node)
      self.generation = cache.generation
      part_result = np.zeros(len(waiting), np.int64)
      misses = np.zeros(len(waiting), np.int64)
      cache.num_nodes, num_misses, hits = pc.resolve(
          rows[waiting], starts[waiting], lengths[waiting], symbols, self.row_node,
          self.row_start, self.row_len, cache.meta, cache.valid, cache.table,
          cache.last_use, cache.stamp, cache.num_nodes, part_result, misses)
      if num_misses:
        cache.pending.append(misses[:num_misses])
      waiting = waiting[part_result < 0]
      if first_round:
        model._stats["hits"] += hits  # pylint: disable=protected-access
        first_round = False
        if self.defer and len(waiting) < len(rows) and \
            sum(len(p) for p in cache.pending) < self.min_batch:
          ready[waiting] = False  # these rows wait for a fuller batch
          break
      model.flush()
    ready = np.flatnonzero(ready)
    # A resolved row stands on its context's node (kept and renumbered by any eviction).
    return ready, cache.cdfs[self.row_node[rows[ready]]].astype(np.int64)


def load_exact_model(directory: str | os.PathLike, backend: str = "auto",
                     max_context: int | None = None, **kwargs) -> ExactM1Model:
  """Loads the exact M1 from a checkpoint directory as a batched `CdfModel`.

  backend: "numpy", "jax", "compiled" or "auto" (JAX when a GPU is visible, else compiled).
  max_context: the attention window in symbols; None: the checkpoint's training context
  (`context_length`). A reader of a run passes the run's recorded window (the manifest's
  m1_context), so that it decodes with the window the run was encoded with.
  kwargs go to ExactM1Model (max_cache_bytes, max_rows, blas_threads).
  """
  arrays, doc = load_exact_arrays(directory)
  if max_context is None:
    max_context = context_length(directory, doc)
  return ExactM1Model(ExactM1(arrays, doc, _backend(backend), max_context=max_context), **kwargs)


def _backend(name: str):
  if name == "numpy":
    return NumpyBackend
  if name == "compiled":
    from neural_compression.m1.engine.compiled_forward import CompiledBackend
    return CompiledBackend
  from neural_compression.m1.engine import jax_backend
  if name == "jax":
    return jax_backend.JaxBackend
  if name == "auto":
    return jax_backend.JaxBackend if jax_backend.gpu_visible() else _backend("compiled")
  raise ValueError(f"unknown backend {name!r}; use numpy, compiled, jax or auto")
