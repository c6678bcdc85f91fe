"""The exact engine's prefix cache: a compiled trie of window prefixes under a byte budget.

One node per distinct prefix (context) holds the int8 keys and values of the prefix's last
position and the CDF of the symbol after it. Nodes live in fixed arrays sized from a byte
budget; a hash table maps (parent node, symbol) to the child. The table starts small and doubles
as nodes arrive (load <= 1/2, up to its size for the whole budget), so that while the cache is
far from full every lookup probes memory that stays in the CPU's cache. A node's parent always has a
smaller id, so node order is a topological order of the trie.

A *session* follows many rows (encoder windows, decoder windows) step by step: a row whose
context grew by one symbol since the last step costs one hash lookup, a row whose context reset
is at the root; any other context is walked from the root. Rows whose node is missing become one
batch of new positions for the model (`misses`), computed together, each attending to its own
cached history (`history`).

Eviction (when a step would not find room): the least recently used half of the nodes is
dropped, keeping every ancestor of a kept node and every node a session's row stands on; the
survivors are compacted in id order and the table rebuilt. CDFs are a pure function of the
prefix (exact engine), so eviction changes which positions are recomputed, never a CDF.
"""
from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

# Every step of a coder session looks its row's context up here, so these kernels run without
# numba's reference counting (`_nrt=False`, as compiled_coder's): with it, each call from the
# sessions' loops paid atomic increfs and decrefs for every array argument, 22 of the 30 ns a
# lookup took. The per-step helpers are inlined into their callers (`inline="always"`). Only
# `compact` allocates, so only it keeps reference counting.
_jit = numba.njit(cache=True, nogil=True, _nrt=False)
_inline = numba.njit(cache=True, nogil=True, _nrt=False, inline="always")
_jit_allocating = numba.njit(cache=True, nogil=True)

ROOT = 0  # the empty context: its position is the start-of-segment token
_EMPTY = -1
_SYMBOL_SLOTS = 512  # key = parent * 512 + symbol (NUM_SYMBOLS = 257 < 512)
# A table slot is key << _CHILD_BITS | child: nodes < 2**26 (PrefixCache checks), so keys below
# 2**35 and the slot below 2**61.
_CHILD_BITS = 26
_CHILD_MASK = (1 << _CHILD_BITS) - 1
_FIRST_TABLE_SLOTS = 1 << 12  # the hash table's size before it first grows (32 KiB)


@_inline
def _slot(key, mask):
  # Fibonacci hashing: the top bits of key * 2**64 / golden ratio index the table.
  h = np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)
  return np.int64((h >> np.uint64(32)) ^ (h >> np.uint64(45))) & mask


@_inline
def _find(table, key):
  """The child node stored under key (parent * 512 + symbol), or -1. A slot packs key and child
  in one int64, so a probe costs one memory access (most probes miss every cache level)."""
  mask = table.shape[0] - 1
  i = _slot(key, mask)
  while table[i] != _EMPTY:
    if table[i] >> _CHILD_BITS == key:
      return table[i] & _CHILD_MASK
    i = (i + 1) & mask
  return -1


@intrinsic
def _prefetch_2d(typingctx, array, i, j):  # pylint: disable=unused-argument
  """Hints the CPU to load array[i, j]'s cache line (LLVM's llvm.prefetch: read, keep in every
  level). Only a hint: no value changes, and it never faults. numba.extending.intrinsic is
  public API; cgutils (the item pointer) is numba's own codegen helper, not public."""
  def codegen(context, builder, signature, args):
    array_type = signature.args[0]
    data = context.make_array(array_type)(context, builder, args[0])
    pointer = cgutils.get_item_pointer(context, builder, array_type, data, [args[1], args[2]])
    i8_pointer, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
    prefetch = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [i8_pointer, i32, i32, i32]),
        "llvm.prefetch.p0i8")
    builder.call(prefetch, [builder.bitcast(pointer, i8_pointer), ir.Constant(i32, 0),
                            ir.Constant(i32, 3), ir.Constant(i32, 1)])
    return context.get_dummy_value()
  return types.void(array, i, j), codegen


@_inline
def prefetch_next_cdf(table, cdf_table, node, symbol, next_symbol):
  """The child of `node` by `symbol` (the context its row reaches if `symbol` joins it), or -1
  if it is not cached. Where it is, starts loading the CDF entry its row will read next
  (cdf_table[child, next_symbol]), so that the miss overlaps the coder's work on `symbol`; the
  row's next lookup takes the child as its hint (resolve_row) instead of probing again."""
  child = _find(table, node * _SYMBOL_SLOTS + symbol)
  if child >= 0:
    _prefetch_2d(cdf_table, np.int64(child), np.int64(next_symbol))
  return child


@_inline
def _insert(table, key, value):
  mask = table.shape[0] - 1
  i = _slot(key, mask)
  while table[i] != _EMPTY:
    i = (i + 1) & mask
  table[i] = (key << _CHILD_BITS) | value


@_inline
def resolve_row(row, symbols, start, length, row_node, row_start, row_len, meta, valid, table,
                last_use, stamp, num_nodes, pending, num_pending, hint=-1):
  """Finds one row's context node, walking from its last node where the context extends it.

  hint: -1, or exactly the child of the row's last node (row_node[row], the node this function
  stored for it) by symbols[start + row_len[row]], looked up by the caller (prefetch_next_cdf)
  since; it is trusted, and replaces the walk's first probe, whenever the row's context extends
  its last one (it is dropped otherwise).
  meta[:, 0] parent, meta[:, 1] symbol, meta[:, 2] depth. A missing node is created (invalid until
  computed) and appended to `pending`; a row waiting on one gets -1 and keeps its deepest valid
  node for the next round. The caller leaves room for one new node.
  Returns (node or -1, num_nodes, num_pending, whether it was a hit without waiting).
  """
  if row_node[row] >= 0 and row_start[row] == start and row_len[row] <= length:
    node, j = row_node[row], row_len[row]
  else:
    node, j = ROOT, 0
    hint = -1  # a hint is a child of the row's last node
  while j < length:
    key = node * _SYMBOL_SLOTS + symbols[start + j]
    child = hint if hint >= 0 else _find(table, key)
    hint = -1
    if child < 0:
      child = num_nodes
      num_nodes += 1
      meta[child, 0] = node
      meta[child, 1] = symbols[start + j]
      meta[child, 2] = j + 1
      valid[child] = False
      last_use[child] = stamp
      _insert(table, key, child)
      pending[num_pending] = child
      num_pending += 1
      break
    if not valid[child]:
      break
    node = child
    j += 1
  row_node[row], row_start[row], row_len[row] = node, start, j
  if j < length:
    return -1, num_nodes, num_pending, False
  last_use[node] = stamp
  return node, num_nodes, num_pending, True


@_jit
def resolve(rows, starts, lengths, symbols, row_node, row_start, row_len, meta, valid, table,
            last_use, stamp, num_nodes, result, misses):
  """resolve_row for many rows: result[i] is row rows[i]'s node or -1 (waiting); new nodes go to
  `misses`. Returns (num_nodes, num_misses, num_hits)."""
  num_misses = 0
  hits = 0
  for i in range(rows.shape[0]):
    node, num_nodes, num_misses, hit = resolve_row(
        rows[i], symbols, starts[i], lengths[i], row_node, row_start, row_len, meta, valid, table,
        last_use, stamp, num_nodes, misses, num_misses)
    result[i] = node
    hits += hit
  return num_nodes, num_misses, hits


@_jit
def history(nodes, meta, max_history, hist_idx, hist_len, tokens, bos):
  """Per new node: its input token and the ids of the nodes on its path (oldest first), the
  last max_history of them (the attention window)."""
  for m in range(nodes.shape[0]):
    node = nodes[m]
    if node == ROOT:
      tokens[m] = bos
      hist_len[m] = 0
      continue
    tokens[m] = meta[node, 1]
    n = min(meta[node, 2], max_history)  # the path root..parent has depth(node) nodes
    hist_len[m] = n
    p = meta[node, 0]
    for t in range(n - 1, -1, -1):
      hist_idx[m, t] = p
      p = meta[p, 0]


@_jit_allocating
def compact(num_nodes, threshold, pinned, meta, last_use, table, kv_k, kv_v, cdfs,
            row_nodes):
  """Drops the nodes used before `threshold` (keeping ancestors of kept and `pinned` nodes),
  compacts the rest in id order, remaps `row_nodes` (-1 where dropped) and rebuilds the table.
  Returns the new node count."""
  keep = last_use[:num_nodes] >= threshold
  keep[ROOT] = True
  for node in pinned:
    if node >= 0:
      keep[node] = True
  for node in range(num_nodes - 1, 0, -1):
    if keep[node]:
      keep[meta[node, 0]] = True
  new_id = np.full(num_nodes, -1, np.int64)
  count = 0
  for node in range(num_nodes):
    if keep[node]:
      new_id[node] = count
      if count != node:
        kv_k[:, count] = kv_k[:, node]
        kv_v[:, count] = kv_v[:, node]
        cdfs[count] = cdfs[node]
        meta[count, 1] = meta[node, 1]
        meta[count, 2] = meta[node, 2]
        last_use[count] = last_use[node]
      meta[count, 0] = new_id[meta[node, 0]] if node != ROOT else -1
      count += 1
  for i in range(row_nodes.shape[0]):
    if row_nodes[i] >= 0:
      row_nodes[i] = new_id[row_nodes[i]]
  index(table, meta, count)
  return count


@_jit
def index(table, meta, num_nodes):
  """Refills the hash table with nodes 1 .. num_nodes - 1 (the root has no key)."""
  table[:] = _EMPTY
  for node in range(1, num_nodes):
    _insert(table, meta[node, 0] * _SYMBOL_SLOTS + meta[node, 1], node)


class PrefixCache:
  """The node arrays of the trie (see module docstring), sized from `max_bytes`."""

  def __init__(self, layers: int, heads: int, head_dim: int, cdf_len: int, max_bytes: int):
    self.node_bytes = (2 * layers * heads * head_dim  # int8 keys and values
                       + 4 * cdf_len  # int32 CDF
                       + 8 * 3 + 8 + 1  # meta, last use, valid
                       + 2 * 8)  # hash table slots (load <= 1/2)
    self.capacity = int(max_bytes // self.node_bytes)
    if self.capacity >= 1 << _CHILD_BITS:
      raise ValueError(f"a prefix cache of {max_bytes:,} bytes would hold {self.capacity:,} "
                       f"nodes; at most {(1 << _CHILD_BITS) - 1:,} are addressable")
    if self.capacity < 1024:
      raise ValueError(f"a prefix cache of {max_bytes:,} bytes holds {self.capacity} nodes of "
                       f"{self.node_bytes:,} bytes; give it at least {1024 * self.node_bytes:,}")
    self.max_bytes = max_bytes
    self.zero_slot = self.capacity  # all-zero keys and values: the padding of short histories
    self.kv_k = np.zeros((layers, self.capacity + 1, heads, head_dim), np.int8)
    # np.zeros, not zeros_like (which writes every byte): untouched pages cost no memory or time.
    self.kv_v = np.zeros(self.kv_k.shape, np.int8)
    self.cdfs = np.zeros((self.capacity, cdf_len), np.int32)
    self.meta = np.zeros((self.capacity, 3), np.int64)
    self.meta[ROOT] = (-1, 0, 0)
    self.last_use = np.zeros(self.capacity, np.int64)
    self.valid = np.zeros(self.capacity, np.bool_)
    # The table grows with the nodes (load <= 1/2) up to its full size for `capacity`: a cache
    # far from full then probes a table that stays in the CPU's cache (every step's lookup).
    self._full_table_slots = 1 << (2 * self.capacity - 1).bit_length()
    self.table = np.full(min(_FIRST_TABLE_SLOTS, self._full_table_slots), _EMPTY, np.int64)
    self.num_nodes = 1  # the root, computed on first use
    self.stamp = 0
    self.generation = 0  # bumped by every eviction: sessions then forget their rows' nodes
    self.evictions = 0
    self.pending: list[np.ndarray] = []  # created nodes waiting for their forward (sessions)

  @property
  def room(self) -> int:
    """Nodes the cache holds before `make_room` must run: `capacity`, or fewer while the hash
    table has not grown to its full size."""
    return min(self.capacity, self.table.shape[0] // 2)

  def make_room(self, needed: int, pinned: np.ndarray) -> None:
    """Makes room for `needed` more nodes: grows the hash table while the budget allows (node
    ids unchanged), then evicts; `pinned` nodes (and their ancestors) stay."""
    wanted = min(self.num_nodes + needed, self.capacity)
    if wanted > self.table.shape[0] // 2:
      slots = self.table.shape[0]
      while slots // 2 < wanted and slots < self._full_table_slots:
        slots *= 2
      self.table = np.full(slots, _EMPTY, np.int64)
      index(self.table, self.meta, self.num_nodes)
    if self.num_nodes + needed <= self.room:
      return
    stamps = np.unique(self.last_use[:self.num_nodes])
    for threshold in (stamps[len(stamps) // 2], stamps[-1], self.stamp + 1):
      self.num_nodes = compact(self.num_nodes, threshold, pinned, self.meta, self.last_use,
                               self.table, self.kv_k, self.kv_v, self.cdfs, pinned)
      self.generation += 1
      self.evictions += 1
      if self.num_nodes + needed <= self.capacity:
        return
    raise MemoryError(f"the prefix cache ({self.max_bytes:,} bytes, {self.capacity:,} nodes) "
                      f"cannot hold the {self.num_nodes:,} prefixes that {len(pinned)} rows stand "
                      f"on plus {needed:,} new ones: raise the cache budget or lower the rows")
