"""The compiled twin of the reference coder: the same codes, bit for bit, in fixed-width integers.

The reference (`arithmetic_coder`, `equal_info_windows`) keeps `lo` as an unbounded Python int,
which costs O(code length) per symbol. Here every interval [lo, lo + width) / 2**scale is held as

  * `low`: the lowest W = R + 1 bits of lo (R = P + RENORM_HEADROOM_BITS), an int64;
  * `pending`: the next bits of lo above `low`, fewer than PENDING_FLUSH_BITS = 32 of them, as
           one int64 (how many: scale - W - hi_len, when scale >= W);
  * `hi`:  the bits of lo above those, from position scale - 1 down, most significant first, one
           uint8 per bit, in a per-row buffer of hi_len bits that `pending` feeds 32 bits at a
           time (so a window code of b bits, 16 say, rarely touches it);
  * `width` (R + 1 bits after renormalization) and `scale`, as in the reference.

Narrowing adds r * c[s] < 2**(R+1) to `low` and shifts the bits leaving it into `pending`; a
carry out of bit W - 1 increments `pending`, and only when that overflows flips the trailing ones
of `hi` (amortized O(1): every one it clears was shifted in once). Every test the reference makes
on its big integers depends only on lo modulo 2**e for some e <= R + 1 (the fit of a b-bit block,
the straddling codes, the decoder's offset), so it reads `low`; only writing a code reads `hi`
and `pending`. Row state columns: low, width, scale, hi_len, k, pos (windows), pending.

Equal-info windows need the codes T(I_j) of every prefix j of the open window for the
"d != T(I_j), j < k" rule. They never have to be stored: I_k lies inside I_j, so T(I_j) <= T(I_k),
and T(I_k) equals an earlier T(I_j) exactly when T(I_k) == T(I_{k-1}), a one-bit fact known when
I_k is formed. A straddling code is a block inside I_k, hence >= T(I_k), so when T(I_k) is
excluded the encoder wants the smallest straddling code above T(I_k): computed (as an offset from
lo >> (scale - b)) when the CDF after k symbols arrives, while I_k is the current interval. On a
back-off to k < K symbols the state is rebuilt from I_0 by replaying the window's k narrows.

Every kernel advances many rows in one call. The state lives in numpy arrays (`*Batch` classes
below own them); `feed` kernels take one CDF per active row (one call per model step), the
`*_static` kernels run rows to completion under one fixed CDF. Both call the same per-row code,
so the fixed-CDF and the model-driven paths cannot drift apart. Compiled with numba
(`cache=True`): the first call in a fresh environment compiles (see README for the cost), later
processes load the cached machine code.
"""
from __future__ import annotations

import numba
from numba.cpython.unsafe.numbers import leading_zeros
import numpy as np

RENORM_HEADROOM_BITS = 16  # must equal arithmetic_coder.RENORM_HEADROOM_BITS (a test checks)
PENDING_FLUSH_BITS = 32  # bits of lo above `low` moved from `pending` to `hi` at a time

RULE_UNAMBIGUOUS = 0
RULE_PAPER = 1
MODE_AC = 2  # decoder only: no closing rule, stop after `limit` symbols or when undetermined

# Row status codes shared with the Python wrappers.
RUNNING = 0
DONE = 1
ERR_NO_FIRST_SYMBOL = 2  # window decoder: the code determines no first symbol
ERR_TOO_MANY_SYMBOLS = 3  # window decoder: more than max_symbols_per_window symbols
ERR_BLOCK_OUTSIDE = 4  # the code's block left the interval (cannot happen on any code)
ERR_FIRST_SYMBOL_DOES_NOT_FIT = 5  # encoder: impossible for b >= P
NEED_SPACE = 6  # a static driver stopped: an output buffer must grow before resuming

# No kernel allocates, so none needs numba's reference counting (NRT), and with it on every
# array handed to a helper costs atomic increfs and decrefs that numba's pruning leaves in place
# once the helper branches or returns early: they were half the encoder's time. `_nrt=False`
# (numba's per-function switch) drops them. The per-symbol helpers are inlined in numba's IR
# (`inline="always"`), so each caller's loop is one function with no arrays passed on the stack.
_jit = numba.njit(cache=True, nogil=True, _nrt=False)
_inline = numba.njit(cache=True, nogil=True, _nrt=False, inline="always")


# Interval arithmetic on (low, width, scale, hi) --------------------------------------------------

@_inline
def _pending_bits(scale, hi_len, w_bits):
  """How many of lo's bits above `low` (positions W .. scale - 1) wait in `pending` (bits)."""
  return max(0, scale - w_bits) - hi_len


@_inline
def _carry_into_hi(hi, row, hi_len):
  j = hi_len - 1
  while hi[row, j] == 1:
    hi[row, j] = 0
    j -= 1
  hi[row, j] = 1


@_inline
def _renorm_shift(w, w_bits):
  """The renormalization shift (bits) of a width 0 < w < 2**w_bits: the number of doublings that
  bring it into [2**(w_bits - 1), 2**w_bits). One count of leading zeros, not a loop per bit."""
  return leading_zeros(w) - (64 - w_bits)


@_inline
def _renormalize(t, w, shift, scale, hi, row, hi_len, pending, w_bits):
  """Commits the child [t, t + w) (t < 2**(W + 1): a carry is still in t) shifted left by
  `shift` bits: returns (low, width, scale, hi_len, pending).

  The bits leaving `low` at the top join `pending` (below hi's stored bits), but only those at
  positions >= W of lo: while scale < W the interval is [0, 1) at scale, lo < 2**scale, so the
  bits shifted out first (max(0, W - scale) of them) are zeros that are not kept. Once 32 bits
  wait, the oldest 32 go to `hi` in one fixed-length loop.
  """
  waiting = _pending_bits(scale, hi_len, w_bits)
  if t >> w_bits:  # t >= 2**W: the carry goes into pending, and on into hi if it overflows
    t -= np.int64(1) << w_bits
    pending += 1
    if pending >> waiting:
      pending = 0
      _carry_into_hi(hi, row, hi_len)
  kept = min(shift, max(0, scale + shift - w_bits))  # bits shifted out at positions >= W
  pending = (pending << kept) | ((t >> (w_bits - shift)) & ((np.int64(1) << kept) - 1))
  waiting += kept
  if waiting >= PENDING_FLUSH_BITS:  # waiting < 32 + W <= 63 bits: one flush suffices
    waiting -= PENDING_FLUSH_BITS
    for j in range(PENDING_FLUSH_BITS):
      hi[row, hi_len + j] = (pending >> (waiting + PENDING_FLUSH_BITS - 1 - j)) & 1
    hi_len += PENDING_FLUSH_BITS
    pending &= (np.int64(1) << waiting) - 1
  mask = (np.int64(1) << w_bits) - 1
  return (t << shift) & mask, w << shift, scale + shift, hi_len, pending


@_inline
def _narrow(low, width, scale, hi, row, hi_len, pending, c_lo, c_hi, p):
  """Child interval of counts [c_lo, c_hi): returns (low, width, scale, hi_len, pending)."""
  w_bits = p + RENORM_HEADROOM_BITS + 1
  r = width >> p
  w = r * (c_hi - c_lo)
  return _renormalize(low + r * c_lo, w, _renorm_shift(w, w_bits), scale, hi, row, hi_len,
                      pending, w_bits)


@_inline
def _block_fits(low, width, scale, num_bits, w_bits):
  """Whether some num_bits-bit block lies inside the interval (reference: lowest_block)."""
  if scale <= num_bits:
    return True
  e = scale - num_bits
  if e >= w_bits:  # a block of 2**e > width units never fits
    return False
  u = np.int64(1) << e
  rem = low & (u - 1)
  return (2 if rem > 0 else 1) * u - rem <= width


@_inline
def _write_top_bits(out, offset, low, hi, row, hi_len, pending, scale, w_bits, count, add):
  """Writes bits scale-1 .. scale-count of lo (MSB first) to out[offset:], then adds `add`."""
  # Bit scale-1-j of lo is hi[j] for j < hi_len, then a bit of `pending`, down to position W;
  # then a bit of `low`, and 0 below position 0.
  if hi_len == 0 and count <= 62 and scale <= 62:  # lo < 2**62 is one int64: no bit loops
    lo = (pending << w_bits) | low if scale > w_bits else low
    top = lo >> (scale - count) if scale >= count else lo << (count - scale)
    top += add  # the callers' blocks fit: the sum still has `count` bits
    for j in range(count):
      out[offset + j] = (top >> (count - 1 - j)) & 1
    return
  waiting = _pending_bits(scale, hi_len, w_bits)
  from_hi = min(count, hi_len)
  from_pending = min(count, hi_len + waiting)
  from_low = min(count, scale)
  for j in range(from_hi):
    out[offset + j] = hi[row, j]
  for j in range(from_hi, from_pending):
    out[offset + j] = (pending >> (hi_len + waiting - 1 - j)) & 1
  for j in range(from_pending, from_low):
    out[offset + j] = (low >> (scale - 1 - j)) & 1
  for j in range(max(from_pending, from_low), count):
    out[offset + j] = 0
  j = offset + count - 1
  carry = add
  while carry > 0:
    s = out[j] + (carry & 1)
    out[j] = s & 1
    carry = (carry >> 1) + (s >> 1)
    j -= 1


@_inline
def _write_lowest_block(out, offset, low, hi, row, hi_len, pending, scale, w_bits, num_bits,
                        add_rel):
  """Writes the num_bits-bit code T of the lowest block (add_rel < 0), or (lo >> e) + add_rel.

  The block must fit (the callers check). Reference: arithmetic_coder.lowest_block.
  """
  if scale <= num_bits:  # lo << (num_bits - scale)
    _write_top_bits(out, offset, low, hi, row, hi_len, pending, scale, w_bits, scale, 0)
    for j in range(scale, num_bits):
      out[offset + j] = 0
    return
  e = scale - num_bits
  if add_rel < 0:
    add_rel = 1 if (low & ((np.int64(1) << e) - 1)) > 0 else 0
  _write_top_bits(out, offset, low, hi, row, hi_len, pending, scale, w_bits, num_bits,
                  add_rel)


# The equal-info window encoder -------------------------------------------------------------------

@_inline
def _straddle_above_lowest(low, width, scale, cdf, b, p):
  """Smallest straddling b-bit code of the interval above its lowest block, as (code - (lo >> e)),
  or -1 if none (reference: equal_info_windows._straddling_codes)."""
  if scale <= b:
    return -1
  e = scale - b
  u = np.int64(1) << e
  lo_m = low & (u - 1)
  lowest_rel = 1 if lo_m > 0 else 0
  r = width >> p
  # Edges rise with i: start at the first child edge in a block above the lowest one (binary
  # search), then the first edge off a block boundary whose block still fits is the answer.
  need = -((-((lowest_rel + 1) * u - lo_m)) // r)  # cdf[i] >= need  <=>  edge >= (T + 1) * u
  lo_i, hi_i = 1, cdf.shape[0]
  while lo_i < hi_i:
    mid = (lo_i + hi_i) >> 1
    if cdf[mid] >= need:
      hi_i = mid
    else:
      lo_i = mid + 1
  for i in range(lo_i, cdf.shape[0]):
    edge = lo_m + r * cdf[i]  # >= 0, and u = 2**e: shifts and masks divide exactly
    block = edge >> e
    if (block + 1) * u > lo_m + width:
      break
    if edge & (u - 1) != 0:
      return block
  rem_block = (lo_m + r * (np.int64(1) << p) + u - 1) >> e
  if (rem_block + 1) * u <= lo_m + width and rem_block > lowest_rel:
    return rem_block
  return -1


@_inline
def _lowest_excluded(low, scale, delta, b):
  """Whether T(child) == T(parent) for a child at offset delta (parent's units) from lo."""
  e = scale - b
  if e <= 0:
    return delta == 0
  u = np.int64(1) << e
  rem = low & (u - 1)
  return (rem + delta + u - 1) >> e == (1 if rem > 0 else 0)


@_inline
def _encoder_reset(st, row, p):
  st[row, 0] = 0  # low
  st[row, 1] = np.int64(1) << (p + RENORM_HEADROOM_BITS)  # width
  st[row, 2] = p + RENORM_HEADROOM_BITS  # scale
  st[row, 3] = 0  # hi_len
  st[row, 4] = 0  # k: symbols in the open window
  st[row, 6] = 0  # pending


@_jit
def encoder_init(st, hi, rows, p):
  """Puts encoder rows at the start of their first window: [0, 1), no symbols, position 0."""
  for row in rows:
    _encoder_reset(st, row, p)
    st[row, 5] = 0  # pos: first symbol of the open window


@_inline
def _encoder_feed(row, cdf, symbols, sym_start, sym_end, st, hi, step_counts, excluded, strad,
                  out_bits, out_pos, win_row, win_nsym, win_back, win_count, b, p, rule):
  """One reference `EqualInfoEncoderState.feed` for one row. Returns (out_pos, win_count,
  status)."""
  w_bits = p + RENORM_HEADROOM_BITS + 1
  low, width, scale, hi_len, k, pos = st[row, 0], st[row, 1], st[row, 2], st[row, 3], \
      st[row, 4], st[row, 5]
  pending = st[row, 6]
  if k >= 1 and excluded[row, k]:
    strad[row, k] = _straddle_above_lowest(low, width, scale, cdf, b, p)
  nxt = sym_start + pos + k
  if nxt < sym_end:
    x = symbols[nxt]
    c_lo = cdf[x]
    c_hi = cdf[x + 1]
    r = width >> p
    t = low + r * c_lo
    w = r * (c_hi - c_lo)
    shift = _renorm_shift(w, w_bits)
    child_low = (t & ((np.int64(1) << (w_bits - shift)) - 1)) << shift
    if _block_fits(child_low, w << shift, scale + shift, b, w_bits):
      excluded[row, k + 1] = k >= 1 and _lowest_excluded(low, scale, r * c_lo, b)
      strad[row, k + 1] = -1
      step_counts[row, k, 0] = c_lo
      step_counts[row, k, 1] = c_hi
      low, width, scale, hi_len, pending = _renormalize(t, w, shift, scale, hi, row, hi_len,
                                                        pending, w_bits)
      st[row, 0], st[row, 1], st[row, 2], st[row, 3], st[row, 4] = low, width, scale, hi_len, \
          k + 1
      st[row, 6] = pending
      return out_pos, win_count, RUNNING
  if k == 0:
    return out_pos, win_count, ERR_FIRST_SYMBOL_DOES_NOT_FIT
  greedy = k
  chosen = k
  rel = -1
  if rule == RULE_UNAMBIGUOUS:
    chosen = 0
    for j in range(greedy, 0, -1):
      if not excluded[row, j]:
        chosen, rel = j, -1
        break
      if strad[row, j] >= 0:
        chosen, rel = j, strad[row, j]
        break
    if chosen == 0:
      return out_pos, win_count, ERR_FIRST_SYMBOL_DOES_NOT_FIT
    if chosen < greedy:  # back off: rebuild I_chosen from I_0
      _encoder_reset(st, row, p)
      low, width, scale, hi_len, pending = st[row, 0], st[row, 1], st[row, 2], st[row, 3], \
          st[row, 6]
      for j in range(chosen):
        low, width, scale, hi_len, pending = _narrow(
            low, width, scale, hi, row, hi_len, pending, step_counts[row, j, 0],
            step_counts[row, j, 1], p)
    _write_lowest_block(out_bits, out_pos, low, hi, row, hi_len, pending, scale, w_bits, b,
                        rel)
  else:  # paper: the minimal code, padded with zeros
    n0 = scale - (w_bits - 1)
    n = n0 if _block_fits(low, width, scale, n0, w_bits) else n0 + 1
    _write_lowest_block(out_bits, out_pos, low, hi, row, hi_len, pending, scale, w_bits, n,
                        -1)
    for j in range(n, b):
      out_bits[out_pos + j] = 0
  win_row[win_count] = row
  win_nsym[win_count] = chosen
  win_back[win_count] = greedy - chosen
  _encoder_reset(st, row, p)
  st[row, 5] = pos + chosen
  done = sym_start + pos + chosen >= sym_end
  return out_pos + b, win_count + 1, DONE if done else RUNNING


@_jit
def encoder_feed(rows, cdfs, symbols, sym_off, st, hi, step_counts, excluded, strad, out_bits,
                 out_pos, win_row, win_nsym, win_back, win_count, status, b, p, rule):
  """Feeds cdfs[i] to row rows[i] for every i (one model step). Returns (out_pos, win_count).

  The caller leaves room for one more window per row in the output arrays.
  """
  for i in range(rows.shape[0]):
    row = rows[i]
    out_pos, win_count, status[row] = _encoder_feed(
        row, cdfs[i], symbols, sym_off[row], sym_off[row + 1], st, hi, step_counts, excluded,
        strad, out_bits, out_pos, win_row, win_nsym, win_back, win_count, b, p, rule)
  return out_pos, win_count


@_jit
def encoder_run_static(cdf, symbols, sym_off, st, hi, step_counts, excluded, strad, out_bits,
                       out_pos, win_row, win_nsym, win_back, win_count, status, b, p, rule):
  """Runs every RUNNING row to the end under one fixed CDF; stops early (NEED_SPACE returned)
  when the output arrays could not take one more window. Returns (out_pos, win_count, flag)."""
  for row in range(status.shape[0]):
    while status[row] == RUNNING:
      if out_pos + b > out_bits.shape[0] or win_count >= win_row.shape[0]:
        return out_pos, win_count, NEED_SPACE
      out_pos, win_count, status[row] = _encoder_feed(
          row, cdf, symbols, sym_off[row], sym_off[row + 1], st, hi, step_counts, excluded,
          strad, out_bits, out_pos, win_row, win_nsym, win_back, win_count, b, p, rule)
  return out_pos, win_count, DONE


@_jit
def encoder_contexts(rows, symbols, sym_off, st, ctx_off):
  """Start and length of each row's open-window context: its model input."""
  for i in range(rows.shape[0]):
    row = rows[i]
    ctx_off[i, 0] = sym_off[row] + st[row, 5]
    ctx_off[i, 1] = st[row, 4]


# The window decoder (and AC's prefix decoder) ----------------------------------------------------

@_jit
def decoder_init(dst, code_bits, code_off, code_len, rows, p):
  """dst columns: D = floor(x * 2**scale) - lo, low, width, scale, k, paper match, last one bit."""
  r_bits = p + RENORM_HEADROOM_BITS
  for row in rows:
    start, length = code_off[row], code_len[row]
    d = np.int64(0)
    last_one = -1
    first = min(r_bits, length)
    for j in range(first):
      bit = code_bits[start + j]
      d = (d << 1) | bit
      if bit:
        last_one = j
    d <<= r_bits - first  # bits past the code's end are zeros
    for j in range(length - 1, first - 1, -1):  # a later one bit, if any
      if code_bits[start + j]:
        last_one = j
        break
    dst[row, 0] = d
    dst[row, 1] = 0
    dst[row, 2] = np.int64(1) << r_bits
    dst[row, 3] = r_bits
    dst[row, 4] = 0
    dst[row, 5] = 0
    dst[row, 6] = last_one


@_inline
def _symbol_below(cdf, r, d):
  """Largest i with cdf[i] <= d // r, for cdf[0] = 0 <= d (numpy searchsorted(cdf, d // r,
  side='right') - 1). The search halves a fixed-length range each step and the comparison only
  moves `base`, which the compiler turns into a conditional move: no branch to mispredict on
  the data, and one division before the chain of loads instead of a multiplication in it."""
  base = 0
  n = cdf.shape[0]
  q = d // r
  while n > 1:
    half = n >> 1
    if cdf[base + half] <= q:
      base += half
    n -= half
  return base


@_inline
def _decoder_feed(row, cdf, code_bits, start, length, dst, out, limit, p, mode):
  """One reference decoder step for one row (window or AC prefix). Returns the row's status."""
  w_bits = p + RENORM_HEADROOM_BITS + 1
  d, low, width, scale, k = dst[row, 0], dst[row, 1], dst[row, 2], dst[row, 3], dst[row, 4]
  if scale >= length:
    e = scale - length
    if e >= w_bits:
      return ERR_BLOCK_OUTSIDE
    end = d + (np.int64(1) << e)
  else:
    end = d + 1
  if d < 0 or end > width:
    return ERR_BLOCK_OUTSIDE
  r = width >> p
  symbol = -1
  if d < (r << p):
    s = _symbol_below(cdf, r, d)
    if end <= r * cdf[s + 1]:
      symbol = s
  if symbol < 0:
    if k == 0 and mode != MODE_AC:
      return ERR_NO_FIRST_SYMBOL
    return DONE
  if k >= limit:
    return ERR_TOO_MANY_SYMBOLS
  c_lo = cdf[symbol]
  c_hi = cdf[symbol + 1]
  t = low + r * c_lo
  d -= r * c_lo
  w = r * (c_hi - c_lo)
  mask = (np.int64(1) << w_bits) - 1
  shift = _renorm_shift(w, w_bits)
  w <<= shift
  low = (t << shift) & mask
  # d takes the next `shift` code bits; bits past the code's end are zeros.
  code_end = min(scale + shift, length)
  for i in range(scale, code_end):
    d = (d << 1) | code_bits[start + i]
  d <<= scale + shift - max(code_end, scale)
  scale += shift
  out[row, k] = symbol
  k += 1
  dst[row, 0], dst[row, 1], dst[row, 2], dst[row, 3], dst[row, 4] = d, low, w, scale, k
  last_one = dst[row, 6]
  if mode == MODE_AC:
    return DONE if k >= limit else RUNNING
  if mode == RULE_PAPER:
    r_bits = w_bits - 1
    n0 = scale - r_bits
    n = n0 if _block_fits(low, w, scale, n0, w_bits) else n0 + 1
    if n <= length and last_one < n:
      e = scale - n
      rem = low & ((np.int64(1) << e) - 1)
      if (rem + d) >> e == (1 if rem > 0 else 0):
        dst[row, 5] = k
    return RUNNING
  # unambiguous rule (a): the code is the lowest b-bit block of I_k
  if scale >= length:
    if scale - length >= w_bits or d < (np.int64(1) << (scale - length)):
      return DONE
  elif d == 0 and last_one < scale:
    return DONE
  return RUNNING


@_jit
def decoder_feed(rows, cdfs, code_bits, code_off, code_len, dst, out, status, limits, p, mode):
  """Feeds cdfs[i] to decoder row rows[i] for every i (one model step)."""
  for i in range(rows.shape[0]):
    row = rows[i]
    status[row] = _decoder_feed(row, cdfs[i], code_bits, code_off[row], code_len[row], dst, out,
                                limits[row], p, mode)


@_jit
def decoder_run_static(cdf, code_bits, code_off, code_len, dst, out, status, limits, p, mode):
  """Runs every RUNNING row to the end under one fixed CDF; returns NEED_SPACE if a row's output
  row is full (grow `out` and call again), else DONE."""
  for row in range(status.shape[0]):
    while status[row] == RUNNING:
      if dst[row, 4] >= out.shape[1]:
        return NEED_SPACE
      status[row] = _decoder_feed(row, cdf, code_bits, code_off[row], code_len[row], dst, out,
                                  limits[row], p, mode)
  return DONE


@_jit
def gather_prefixes(out, counts, flat):
  """Concatenates out[row, :counts[row]] (symbols) over all rows, in row order, into flat."""
  j = 0
  for row in range(out.shape[0]):
    for i in range(counts[row]):
      flat[j] = out[row, i]
      j += 1


# AC / StaticAC: one interval per example, no resets ----------------------------------------------

@_jit
def ac_init(st, rows, p):
  """Puts AC rows at the interval [0, 1) with no symbols coded."""
  for row in rows:
    _encoder_reset(st, row, p)


@_inline
def _ac_step(low, width, scale, hi_len, pending, k, cdf, x, hi, trace, row, p):
  """Narrows the row's interval I_k by symbol x and records I_{k+1} in its trace. Takes and
  returns the state (low, width, scale, hi_len, pending, k) as scalars, so that a caller coding
  many symbols of one row keeps it in registers."""
  low, width, scale, hi_len, pending = _narrow(low, width, scale, hi, row, hi_len, pending,
                                               cdf[x], cdf[x + 1], p)
  trace[row, k + 1, 0] = low
  trace[row, k + 1, 1] = width
  trace[row, k + 1, 2] = scale
  return low, width, scale, hi_len, pending, k + 1


@_inline
def _ac_push(row, cdf, x, st, hi, trace, p):
  low, width, scale, hi_len, pending, k = _ac_step(
      st[row, 0], st[row, 1], st[row, 2], st[row, 3], st[row, 6], st[row, 4], cdf, x, hi, trace,
      row, p)
  st[row, 0], st[row, 1], st[row, 2], st[row, 3], st[row, 4] = low, width, scale, hi_len, k
  st[row, 6] = pending


@_jit
def ac_feed(rows, cdfs, symbols, sym_off, st, hi, trace, p):
  """Narrows each row rows[i] by its next symbol under cdfs[i] (one lockstep model step)."""
  for i in range(rows.shape[0]):
    row = rows[i]
    x = symbols[sym_off[row] + st[row, 4]]
    _ac_push(row, cdfs[i], x, st, hi, trace, p)


@_jit
def ac_run_static(cdf, symbols, sym_off, st, hi, trace, codes, code_off, code_len, needed, p):
  """Encodes and finishes every row under one fixed CDF (StaticAC), one row after another.

  Every row uses row 0 of `hi` and `trace` (sized for the longest row), so they stay in cache
  between a row's narrowing and its finish. Row r's code goes to codes[code_off[r]:] (code_len[r]
  bits) and its needed[k] (see ac_finish), k = 0..len, to needed[sym_off[r] + r:].
  """
  for row in range(sym_off.shape[0] - 1):
    low, width, scale, hi_len, k = st[row, 0], st[row, 1], st[row, 2], st[row, 3], st[row, 4]
    pending = st[row, 6]
    for j in range(sym_off[row], sym_off[row + 1]):
      low, width, scale, hi_len, pending, k = _ac_step(low, width, scale, hi_len, pending, k, cdf,
                                                       symbols[j], hi, trace, 0, p)
    st[row, 0], st[row, 1], st[row, 2], st[row, 3], st[row, 4] = low, width, scale, hi_len, k
    st[row, 6] = pending
    first_needed = sym_off[row] + row
    code_len[row] = _ac_finish(row, 0, st, hi, trace, codes[code_off[row]:code_off[row + 1]],
                               needed[first_needed:first_needed + k + 1], p)


@_jit
def ac_finish(row, st, hi, trace, code_out, needed, p):
  """Writes the minimal code of the row's final interval to code_out (returns its length n in
  bits) and needed[k], the fewest leading code bits whose block lies in I_k, for k = 0..len."""
  return _ac_finish(row, row, st, hi, trace, code_out, needed, p)


@_inline
def _ac_finish(row, buf_row, st, hi, trace, code_out, needed, p):
  """ac_finish of row `row` whose hi bits and trace are row `buf_row` of hi and trace."""
  w_bits = p + RENORM_HEADROOM_BITS + 1
  low, width, scale, hi_len, count = st[row, 0], st[row, 1], st[row, 2], st[row, 3], st[row, 4]
  pending = st[row, 6]
  if count == 0:
    needed[0] = 0
    return 0
  n0 = scale - (w_bits - 1)
  n = n0 if _block_fits(low, width, scale, n0, w_bits) else n0 + 1
  _write_lowest_block(code_out, 0, low, hi, buf_row, hi_len, pending, scale, w_bits, n, -1)
  needed[0] = 0
  m = 0
  mask = (np.int64(1) << w_bits) - 1
  xs = np.int64(0)  # floor(x * 2**xs_end) mod 2**W, x = code / 2**n
  xs_end = 0
  for k in range(1, count + 1):
    lo_k, width_k, scale_k = trace[buf_row, k, 0], trace[buf_row, k, 1], trace[buf_row, k, 2]
    # scale_k never decreases: shift in the new code bits only (zeros past the code's end).
    for j in range(xs_end, min(scale_k, n)):
      xs = (xs << 1) | code_out[j]
    xs = (xs << (scale_k - max(xs_end, min(scale_k, n)))) & mask
    xs_end = scale_k
    dist = (xs - lo_k) & mask  # floor(x * 2**scale_k) - lo_k
    # The aligned block of 2**g units around X = floor(x * 2**scale_k) lies in [L, H) = I_k iff
    # X >> g > (L - 1) >> g and X >> g < H >> g, i.e. iff g is at most the highest bit where X
    # differs from L - 1 and from H. Only alignment matters, so X, L and H are taken modulo
    # 2**W, all shifted alike: L = lo_k, X = L + dist, H = L + width_k. Blocks of g >= W units
    # exceed the width, and every m before needed[k - 1] is too short already.
    x_rel = lo_k + dist
    g_max = 63 - leading_zeros(x_rel ^ (lo_k + width_k))
    if lo_k > 0:  # else L = 0 modulo 2**W: every block of g < W units starts at or above it
      g_max = min(g_max, 63 - leading_zeros(x_rel ^ (lo_k - 1)))
    m = max(m, scale_k - min(g_max, w_bits - 1))
    needed[k] = m
  return n
