"""The coder's state machines driven through the prefix cache inside one compiled loop.

Between two forward calls everything is bookkeeping: find each row's context node, hand its CDF
to the row's encoder or decoder, note the misses. These loops do all of it in machine code,
each row on for as long as its contexts are cached, and return to Python only when the model
must run (enough misses gathered, or no row can go on), when an output buffer must grow, or when
the cache needs room. Rows whose node is missing simply wait; the others keep going (row
scheduling). The rows' results do not depend on this order: each row sees exactly its own CDF
sequence.
"""
from __future__ import annotations

import numba

from neural_compression.coding import compiled_coder as cc
from neural_compression.m1.engine import prefix_cache as pc

# Without NRT, like compiled_coder's kernels: these loops allocate nothing, and the coder's
# per-row code they inline (_encoder_feed, _decoder_feed) would otherwise pay reference counts.
_jit = numba.njit(cache=True, nogil=True, _nrt=False)
_inline = numba.njit(cache=True, nogil=True, _nrt=False, inline="always")

# numba's cache (cache=True) checks only this file's own text, yet these loops compile in the
# kernels of the files below: without this stamp of their text, a cache compiled before an edit
# of them would keep running their old code. The stamp changes this file whenever they change,
# and so invalidates its cache; tests/test_m1_exact_engine.py fails until it is current.
COMPILED_IN_SOURCES = ("neural_compression/coding/compiled_coder.py",
                       "neural_compression/m1/engine/prefix_cache.py")
COMPILED_IN_SHA256 = "9ad5bebd471870dfb1a73ac165dda745cc40fea9ce7fb1a08bc693dbc033c210"

FINISHED = 0
NEED_FORWARD = 1
NEED_SPACE = 2
NEED_ROOM = 3
FAILED = 4


@_inline
def _ready_node(row, symbols, start, length, row_node, row_start, row_len, waited, meta, valid,
                table, last_use, stamp, num_nodes, pending, num_pending, hits, hint=-1):
  """The row's context node, or -1 while it waits for a forward; counts first-try hits.
  hint: see prefix_cache.resolve_row. Returns (node, num_nodes, num_pending, hits)."""
  node, num_nodes, num_pending, _ = pc.resolve_row(
      row, symbols, start, length, row_node, row_start, row_len, meta, valid, table,
      last_use, stamp, num_nodes, pending, num_pending, hint)
  if node < 0:
    waited[row] = True
  else:
    hits += not waited[row]
    waited[row] = False
  return node, num_nodes, num_pending, hits


@_jit
def run_encoders(symbols, sym_off, st, hi, step_counts, excluded, strad, out_bits, out_pos,
                 win_row, win_nsym, win_back, win_count, status, b, p, rule,
                 row_node, row_start, row_len, waited, meta, valid, table, last_use, stamp,
                 num_nodes, room, cdf_table, pending, min_batch):
  """Steps every running window encoder until the model or a buffer is needed (module doc).

  Returns (reason, out_pos, win_count, stamp, num_nodes, num_pending, hits).
  """
  n = status.shape[0]
  num_pending = 0
  hits = 0
  while True:
    stamp += 1
    active = False
    progressed = False
    for row in range(n):
      # A row runs on while its contexts are cached: its coder state stays in the CPU's cache
      # (one symbol per row per pass would touch every row's state again for each symbol).
      hint = -1  # the child its context reaches if the coded symbol joins the window
      while status[row] == cc.RUNNING:
        active = True
        if out_pos + b > out_bits.shape[0] or win_count + 1 > win_row.shape[0]:
          return NEED_SPACE, out_pos, win_count, stamp, num_nodes, num_pending, hits
        if num_nodes + 1 > room or num_pending + 1 > pending.shape[0]:
          return NEED_ROOM, out_pos, win_count, stamp, num_nodes, num_pending, hits
        start, length = sym_off[row] + st[row, 5], st[row, 4]  # the open window's context
        node, num_nodes, num_pending, hits = _ready_node(
            row, symbols, start, length, row_node, row_start, row_len, waited, meta, valid,
            table, last_use, stamp, num_nodes, pending, num_pending, hits, hint)
        if node < 0:
          break
        progressed = True
        nxt = start + length  # the symbol coded now
        hint = -1
        if nxt + 1 < sym_off[row + 1]:
          hint = pc.prefetch_next_cdf(table, cdf_table, node, symbols[nxt], symbols[nxt + 1])
        out_pos, win_count, status[row] = cc._encoder_feed(  # pylint: disable=protected-access
            row, cdf_table[node], symbols, sym_off[row], sym_off[row + 1], st, hi, step_counts,
            excluded, strad, out_bits, out_pos, win_row, win_nsym, win_back, win_count, b, p,
            rule)
        if status[row] > cc.DONE:
          return FAILED, out_pos, win_count, stamp, num_nodes, num_pending, hits
    if not active:
      return FINISHED, out_pos, win_count, stamp, num_nodes, num_pending, hits
    if num_pending >= min_batch or not progressed:
      return NEED_FORWARD, out_pos, win_count, stamp, num_nodes, num_pending, hits


@_jit
def run_decoders(code_bits, code_off, code_len, dst, out, status, limits, p, mode,
                 row_node, row_start, row_len, waited, meta, valid, table, last_use, stamp,
                 num_nodes, room, cdf_table, pending, min_batch):
  """Steps every running window decoder until the model or a buffer is needed (module doc).

  A row's context is its decoded symbols, out[row, :k]. Returns (reason, stamp, num_nodes,
  num_pending, hits); NEED_SPACE means `out` needs more columns.
  """
  n = status.shape[0]
  width = out.shape[1]
  flat = out.reshape(n * width)
  num_pending = 0
  hits = 0
  while True:
    stamp += 1
    active = False
    progressed = False
    for row in range(n):
      while status[row] == cc.RUNNING:  # on while cached, as run_encoders
        active = True
        if num_nodes + 1 > room or num_pending + 1 > pending.shape[0]:
          return NEED_ROOM, stamp, num_nodes, num_pending, hits
        k = dst[row, 4]
        if k >= width:
          return NEED_SPACE, stamp, num_nodes, num_pending, hits
        node, num_nodes, num_pending, hits = _ready_node(
            row, flat, row * width, k, row_node, row_start, row_len, waited, meta, valid, table,
            last_use, stamp, num_nodes, pending, num_pending, hits)
        if node < 0:
          break
        progressed = True
        status[row] = cc._decoder_feed(  # pylint: disable=protected-access
            row, cdf_table[node], code_bits, code_off[row], code_len[row], dst, out, limits[row],
            p, mode)
    if not active:
      return FINISHED, stamp, num_nodes, num_pending, hits
    if num_pending >= min_batch or not progressed:
      return NEED_FORWARD, stamp, num_nodes, num_pending, hits
