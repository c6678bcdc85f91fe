"""The compiled CPU backend of the exact engine: ExactM1.forward_new's integers, per row in numba.

The numpy reference spends most of its time outside the GEMMs: int64 temporaries for LayerNorm,
requantization, the attention's [R, H, T] score / weight / probability arrays, a sort over 257
symbols per CDF. Here the GEMMs run as int8 x int8 -> int32 on AVX-512 VNNI where numba targets
a CPU with it (`int8_gemm`, ~7x BLAS sgemm at every row count); elsewhere they stay on BLAS for
batches of many rows (numpy `@` on the same int8-valued float32 operands, exact in any order, see
integer_forward's module docstring) and run as an int16 loop in numba for very few rows
(`int_gemm`, e.g. decoding at batch 1, where it beats sgemm). Everything between them runs as
one compiled loop per row
(`numba.njit(cache=True, nogil=True)`, without reference counting where a kernel allocates
nothing, single-threaded like the BLAS the engine caps at one thread).

Why every result equals the numpy backend's, bit for bit:
  * GEMMs: the same float32 operands, products of at most EXACT_K terms (a GEMM with more is
    refused, none of M1's has), so each output is the same exact integer. q, k and v come from
    one GEMM against [wq | wk | wv]: every output column is still its own dot product. int_gemm
    multiplies the same int8 values as int16 (each product < 2**15, exact) and sums them in
    int32 (< EXACT_K * 127**2 < 2**24), the same integer; the kernels below convert it to
    float32 exactly before requantizing. int8_gemm gives the same integers in int32 (its module
    docstring).
  * Requantization: one float32 x float32 multiply (numba keeps float32 * float32 in float32,
    no fastmath, so no FMA contraction or reassociation) rounded by np.rint, which is IEEE
    round-half-to-even in the default rounding mode, as np.round(decimals=0) is; a test compares
    them on every tie. int64 -> float32 conversions convert exact integers below 2**24.
  * LayerNorm, the score-to-table index, the 254 / (2 total) probability rounding, _rdiv,
    _isqrt (the same float64 guess and six Newton steps) and the largest-remainder CDF are the
    reference's int64 expressions written per element; numba's `//` on signed integers is floor
    division as numpy's is. The hot floor divisions avoid the int64 divide in one of two exact
    ways: `_small_floor_div`, a float64 quotient, exact while the numerator is below 2**53
    (the attention's and the CDF's are, by table bounds checked at load), and `_floor_div`
    (LayerNorm), a float64 estimate corrected by integer comparisons, exact for any estimate.
  * Attention reads int8 keys/values (the prefix cache's and lockstep buffer's own storage) and
    sums int8 x int8 products (formed in int16, exact: |product| <= 128**2 = 2**14) in int32:
    exact while the sums stay below 2**31 (head_dim <= 2**17 for scores; for values, only the
    positions of nonzero probability are summed, at most 254 per head with probabilities
    <= 127, so |sum| <= 254 * 127 * 128 < 2**23). The reference's float32 sums of the same
    products are exact too, so both give the integer.
  * Zero probabilities are skipped: the table weights w are >= 0 and their total > 0 (checked
    at load: attn_exp >= 0, and the top key's weight is attn_exp[0] > 0), so the reference's
    prob = (254 w + total) // (2 total) is 0 exactly when 254 w < total, and then adds 0 to
    every output; the other weights are each >= total / 254 and sum to at most total, so at
    most 254 positions per head are kept.
  * Padded history slots are skipped instead of weighted: the reference gives them table weight
    attn_exp[-1] == 0 (checked at load), so they add 0 to every total and output.
  * The CDF's +1 units go to the `left` largest keys remainder * 512 + (511 - symbol), unique
    integers: np.partition's (left)-th largest is the reference's sorted threshold.
"""
from __future__ import annotations

import numba
import numpy as np

from neural_compression import symbols as sym
from neural_compression.m1 import exact_quantization as eq
from neural_compression.m1.engine import int8_gemm
from neural_compression.m1.engine.integer_forward import NumpyBackend
from neural_compression.methods import PRECISION_BITS

# The kernels that allocate nothing run without numba's reference counting (as the coder's,
# compiled_coder, and the prefix cache's): with it, every per-row call and row view paid atomic
# reference counts. The per-element helpers are inlined into their callers. Only the kernels
# that allocate their scratch arrays (attention, logits_to_cdf) keep reference counting.
_jit = numba.njit(cache=True, nogil=True, _nrt=False)
_inline = numba.njit(cache=True, nogil=True, _nrt=False, inline="always")
_jit_allocating = numba.njit(cache=True, nogil=True)

# numba's cache checks only this file's own text, yet these kernels compile in constants of the
# files below (LayerNorm and score shifts, the coder precision): this stamp of their text changes
# this file, and so invalidates its cache, whenever they change (cached_coding has the same;
# tests/test_m1_exact_engine.py fails until it is current).
COMPILED_IN_SOURCES = ("neural_compression/m1/exact_quantization.py",
                       "neural_compression/methods/spec.py")
COMPILED_IN_SHA256 = "4b877ec512c4256fce1051c9e1e573f88670a6195c0614f2284b60246dbd993c"

# Attention totals (<= attn_exp[0] x positions) stay below 2**53 / 255 up to this many history
# positions (checked at load), so _small_floor_div applies; far past any window.
MAX_HISTORY = 1 << 30
# Up to this many rows a forward runs its GEMMs as int_gemm. Measured on 2026-12-03 (AMD EPYC,
# Zen 3, numpy's OpenBLAS, one thread), microseconds per GEMM of M1's four shapes, BLAS / int_gemm:
# at 2 rows 17-54 / 8-26 (int_gemm ~2x ahead), at 4 rows 16-45 / 15-43 (even), at 8 rows
# 21-69 / 29-78 and at 16 rows 38-105 / 72-187 (BLAS ~1.8x ahead). (An earlier measurement put
# int_gemm 2x ahead at 16 rows; it did not reproduce.)
INT_GEMM_MAX_ROWS = 4
_LN_SHIFT = eq.LN_GAIN_BITS - eq.LN_FRAC_BITS
_HALF = 1 << (eq.MULT_SHIFT - 1)


# Per-row integer kernels ------------------------------------------------------------------------

@_inline
def _floor_div(n, d, inv_d):
  """floor(n / d) for int64 n and d > 0, inv_d = 1.0 / d: a float64 estimate corrected by
  integer comparisons, so exact for any estimate (an int64 division costs ~10 multiplies; the
  estimate is off by at most 2 while |n| < 2**53, so the loops run at most twice)."""
  q = np.int64(np.floor(np.float64(n) * inv_d))
  while q * d > n:
    q -= 1
  while (q + 1) * d <= n:
    q += 1
  return q


@_inline
def _small_floor_div(n, d):
  """floor(n / d) for int64 |n| < 2**53 and 0 < d < 2**53, by one float64 division: both
  convert exactly, and a quotient that is not an integer lies at least 1 / d from the integers
  on either side, more than half its ulp (<= |n / d| * 2**-53 < 1 / d), so correct rounding
  never carries it onto one; an integer quotient is exact. So its floor is the integer
  quotient. (An int64 division costs several times more and does not vectorize.)"""
  return np.int64(np.floor(np.float64(n) / np.float64(d)))


@_inline
def _isqrt(v):
  """floor(sqrt(v)) for int64 v >= 1, by the reference's exact steps (integer_forward._isqrt)."""
  x = np.int64(np.floor(np.sqrt(np.float64(v)))) + 2
  for _ in range(6):
    x = min(x, (x + v // x) // 2)
  return x


@_inline
def _layer_norm_row(h, gain, offset, eps, out):
  """int64 residual row h [d] -> int8-valued float32 out [d] (integer_forward._layer_norm)."""
  d = h.shape[0]
  total = np.int64(0)
  for i in range(d):
    total += h[i]
  mean = (2 * total + d) // (2 * d)
  var = np.int64(0)
  for i in range(d):
    c = h[i] - mean
    var += c * c
  var = var // d + eps
  std = _isqrt(var << (2 * eq.LN_FRAC_BITS))
  half = std << _LN_SHIFT
  denom = 2 * half
  inv_denom = 1.0 / np.float64(denom)
  for i in range(d):
    y = _floor_div(2 * (h[i] - mean) * gain[i] + half, denom, inv_denom) + offset[i]
    out[i] = min(max(y, -127), 127)  # into float32, int16 or int8: exact, |y| <= 127


@_jit
def layer_norm(h, gain, offset, eps, out):
  """LayerNorm of every row: h int64 [R, d] -> out float32, int16 or int8 [R, d]."""
  for r in range(h.shape[0]):
    _layer_norm_row(h[r], gain, offset, eps, out[r])


@_jit
def residual_layer_norm(h, y, mult, bias, gain, offset, eps, out):
  """h += round(y * mult) + bias (y: a GEMM's exact float32 or int32 [R, d], below 2**24, so
  its float32 is exact), then out = LayerNorm(h)."""
  for r in range(h.shape[0]):
    for i in range(h.shape[1]):
      h[r, i] += np.int64(np.rint(np.float32(y[r, i]) * mult[i])) + bias[i]
    _layer_norm_row(h[r], gain, offset, eps, out[r])


@_jit
def requant_int8(acc, mult, out):
  """out int8 [R, n] = clip(round(acc * mult), -127, 127) for float32 or int32 acc [R, n]
  (exact integers below 2**24) and float32 mult [n]."""
  for r in range(acc.shape[0]):
    for j in range(acc.shape[1]):
      out[r, j] = np.int8(min(max(np.rint(np.float32(acc[r, j]) * mult[j]), np.float32(-127)),
                              np.float32(127)))


@_jit
def mlp_hidden(acc, bias, mult, out):
  """out [R, f] = clip(round(float32(max(acc + bias, 0)) * mult), 0, 127) into float32, int16 or
  int8 (exact: an integer <= 127), acc float32 or int32."""
  for r in range(acc.shape[0]):
    for j in range(acc.shape[1]):
      a = max(np.int64(acc[r, j]) + bias[j], 0)
      out[r, j] = min(max(np.rint(np.float32(a) * mult[j]), np.float32(0)), np.float32(127))


@_jit_allocating
def attention(qkv, keys, values, hist_idx, hist_len, buckets, rel_bias, score_mult, d_max,
              attn_exp, out):
  """One layer's attention of every row's new position over its history plus itself.

  qkv: int8 [R, 3, H, hd]: q, k and v of the new positions; keys, values: int8 [N, H, hd]
  storage (prefix cache nodes or a lockstep buffer); hist_idx int64 [R, >= T]: row r's history
  positions are keys[hist_idx[r, t]] for t < hist_len[r], oldest first. out [R, H * hd] (float32,
  int16 or int8)
  = clip(_rdiv(sum_t prob_t * value_t, 127), -127, 127), as integer_forward.forward_new computes.
  """
  num_heads, head_dim = qkv.shape[2], qkv.shape[3]
  last_bucket = buckets.shape[0] - 1
  table_last = attn_exp.shape[0] - 1
  t_max = max(hist_idx.shape[1], 1)
  # relative_bias[h, d]: head h's bias for a key d positions back (d = 0: the new position), so
  # the score loop reads it in order instead of through two lookups per key.
  relative_bias = np.empty((num_heads, t_max + 1), np.int64)
  for d in range(t_max + 1):
    bucket = buckets[min(d, last_bucket)]
    for h in range(num_heads):
      relative_bias[h, d] = rel_bias[bucket, h]
  dots = np.empty((num_heads, t_max), np.int32)
  scores = np.empty((num_heads, t_max), np.int64)  # scores, then table weights
  kept_j = np.empty((num_heads, t_max), np.int64)  # storage rows of nonzero probability, per head
  kept_p = np.empty((num_heads, t_max), np.int32)  # and their probabilities
  part = np.zeros(head_dim, np.int32)
  q = np.empty((num_heads, head_dim), np.int16)
  for r in range(qkv.shape[0]):
    n = hist_len[r]
    for h in range(num_heads):
      for c in range(head_dim):
        q[h, c] = qkv[r, 0, h, c]
    # Dot products first, in their own loop (it vectorizes). Each product is exact in int16
    # (127**2 < 2**15), each sum in int32.
    for t in range(n):
      j = hist_idx[r, t]
      for h in range(num_heads):
        s = np.int32(0)
        for c in range(head_dim):
          s += np.int32(q[h, c] * np.int16(keys[j, h, c]))
        dots[h, t] = s
    for h in range(num_heads):
      s = np.int32(0)
      for c in range(head_dim):
        s += np.int32(qkv[r, 0, h, c]) * np.int32(qkv[r, 1, h, c])
      self_score = np.int64(s) + relative_bias[h, 0]
      top = self_score
      for t in range(n):
        score = np.int64(dots[h, t]) + relative_bias[h, n - t]
        scores[h, t] = score
        top = max(top, score)
      # Scores -> table weights -> probabilities in 1/127 units, as integer_forward's weights().
      d_cap, mult = d_max[h], score_mult[h]
      w_self = attn_exp[min((min(top - self_score, d_cap) * mult + _HALF) >> eq.MULT_SHIFT,
                            table_last)]
      total = w_self
      for t in range(n):
        w = attn_exp[min((min(top - scores[h, t], d_cap) * mult + _HALF) >> eq.MULT_SHIFT,
                         table_last)]
        scores[h, t] = w
        total += w
      # prob = floor((254 w + total) / (2 total)) is 0 exactly when 254 w < total, so only the
      # others are divided and kept; there are at most 254 of them (their weights, each >=
      # total / 254, sum to <= total).
      kept = 0
      for t in range(n):
        if scores[h, t] * 254 >= total:
          kept_j[h, kept] = hist_idx[r, t]
          kept_p[h, kept] = _small_floor_div(scores[h, t] * 254 + total, 2 * total)
          kept += 1
      p_self = _small_floor_div(w_self * 254 + total, 2 * total)
      # At most 254 terms of |p x value| <= 127 * 128 per int32 sum (module docstring).
      part[:] = 0
      for k in range(kept):
        j, p = kept_j[h, k], kept_p[h, k]
        for c in range(head_dim):
          part[c] += p * np.int32(values[j, h, c])
      for c in range(head_dim):
        o = (2 * (np.int64(part[c]) + p_self * np.int64(qkv[r, 2, h, c])) + 127) // 254
        out[r, h * head_dim + c] = min(max(o, -127), 127)  # float32, int16 or int8: exact


@_jit_allocating
def logits_to_cdf(y, mult, logit_exp, out):
  """CDFs out int64 [R, n + 1] from the logit GEMM y (float32 or int32) [R, n]: z = round(y * mult), then
  integer_forward._logits_to_cdf (largest remainders, ties to the lower symbol)."""
  n = y.shape[1]
  table_last = logit_exp.shape[0] - 1
  spare = (1 << PRECISION_BITS) - n
  z = np.empty(n, np.int64)
  e = np.empty(n, np.int64)
  base = np.empty(n, np.int64)
  key = np.empty(n, np.int64)
  for r in range(y.shape[0]):
    z_max = np.int64(np.rint(np.float32(y[r, 0]) * mult[0]))
    for i in range(n):
      z[i] = np.int64(np.rint(np.float32(y[r, i]) * mult[i]))
      z_max = max(z_max, z[i])
    total = np.int64(0)
    for i in range(n):
      e[i] = logit_exp[min(z_max - z[i], table_last)]
      total += e[i]
    left = spare
    for i in range(n):
      base[i] = _small_floor_div(e[i] * spare, total)  # < 2**53, checked at load
      left -= base[i]
      key[i] = (e[i] * spare - base[i] * total) * 512 + (511 - i)
    threshold = np.partition(key, n - left)[n - left] if left > 0 else np.int64(0)
    out[r, 0] = 0
    cum = np.int64(0)
    for i in range(n):
      cum += 1 + base[i] + (1 if left > 0 and key[i] >= threshold else 0)
      out[r, i + 1] = cum


@_jit
def int_gemm(a, weights_t, out):
  """out int32 [R, N] = a [R, K] @ weights_t.T for int16 operands holding int8 values: each
  product is exact in int16 (127**2 < 2**15) and each sum of K <= EXACT_K of them in int32, so
  out is the exact integer the float32 GEMM gives. For few rows (AC's lockstep batches) this
  dot-product loop vectorizes to about twice the rate of BLAS sgemm (measured at 16 rows)."""
  for j in range(weights_t.shape[0]):
    for r in range(a.shape[0]):
      s = np.int32(0)
      for c in range(a.shape[1]):
        s += np.int32(a[r, c] * weights_t[j, c])
      out[r, j] = s


# The forward ------------------------------------------------------------------------------------

class CompiledBackend(NumpyBackend):
  """numpy arrays, the forward compiled (ExactM1 builds a CompiledForward for this backend)."""
  name = "compiled"


class CompiledForward:
  """ExactM1's forward with the non-GEMM work compiled (see module docstring).

  Built by ExactM1 for backend "compiled" from its numpy parameters `engine.p`.
  """

  def __init__(self, engine):
    from neural_compression.m1.engine.integer_forward import EXACT_K
    p, c = engine.p, engine.config
    self.config = c
    self.eps = np.int64(engine.eps)
    # The kernels clamp table indices to the table's end, the reference to the lengths below;
    # they skip padded keys (weight attn_exp[-1]) and keys of probability 0 (254 w < total),
    # which is exact for weights >= 0 and a total > 0 (the top key's weight is attn_exp[0]).
    for name, length in (("attn_exp", eq.ATTN_TABLE_LEN), ("logit_exp", eq.LOGIT_TABLE_LEN)):
      table = np.asarray(p[name])
      if table.shape != (length,) or int(table.min()) < 0 or int(table[0]) <= 0:
        raise ValueError(f"the compiled backend needs {name} of {length} entries >= 0 with "
                         f"{name}[0] > 0, got shape {table.shape}, min {int(table.min())}, "
                         f"first {int(table[0])}")
    if int(p["attn_exp"][-1]) != 0:
      raise ValueError("the compiled backend skips padded keys: attn_exp[-1] must be 0")
    spare = (1 << PRECISION_BITS) - sym.NUM_SYMBOLS
    if int(p["logit_exp"].max()) * spare >= 1 << 53 or \
        int(p["attn_exp"].max()) * 255 * (MAX_HISTORY + 1) >= 1 << 53:
      raise ValueError("exp tables too large for the compiled backend's float64 quotients")
    if c.head_dim >= (1 << 31) // (127 * 127):
      raise ValueError(f"head_dim {c.head_dim} too large for int32 scores")
    gemm_k = [c.d_model, c.num_heads * c.head_dim, c.mlp_dim]
    if max(gemm_k) > EXACT_K:
      raise ValueError(f"the compiled backend needs GEMM depths <= EXACT_K = {EXACT_K}, got "
                       f"{max(gemm_k)}")
    self.embedding = np.ascontiguousarray(p["embedding"], np.int64)
    self.buckets = np.ascontiguousarray(p["buckets"], np.int64)
    self.attn_exp = np.ascontiguousarray(p["attn_exp"], np.int64)
    self.logit_exp = np.ascontiguousarray(p["logit_exp"], np.int64)
    self.layers = []
    for l in range(c.num_layers):
      pre = f"layers_{l}/"
      f32 = lambda name, pre=pre: np.ascontiguousarray(p[pre + name], np.float32)  # noqa: E731
      i64 = lambda name, pre=pre: np.ascontiguousarray(p[pre + name], np.int64)  # noqa: E731
      self.layers.append(dict(
          wqkv=np.ascontiguousarray(np.concatenate([p[pre + "wq"], p[pre + "wk"], p[pre + "wv"]],
                                                   axis=1), np.float32),
          mqkv=np.concatenate([f32("mq"), f32("mk"), f32("mv")]),
          wo=f32("wo"), mo=f32("mo"), wi=f32("wi"), bi=i64("bi"), mi=f32("mi"), wd=f32("wd"),
          md=f32("md"), bd=i64("bd"), rel_bias=i64("rel_bias"), score_mult=i64("score_mult"),
          d_max=np.ascontiguousarray(engine.d_max[l], np.int64),
          ln1=(i64("ln1_gain"), i64("ln1_offset")), ln2=(i64("ln2_gain"), i64("ln2_offset"))))
    self.lnf = (np.ascontiguousarray(p["lnf_gain"], np.int64),
                np.ascontiguousarray(p["lnf_offset"], np.int64))
    self.wz = np.ascontiguousarray(p["wz"], np.float32)
    self.mz = np.ascontiguousarray(p["mz"], np.float32)
    self._zero_bias = np.zeros(c.d_model, np.int64)
    all_weights = [w[n] for w in self.layers for n in ("wqkv", "wo", "wi", "wd")] + [self.wz]
    # int8_gemm's operands where numba targets AVX-512 VNNI (every row count), else int_gemm's:
    # every weight matrix transposed, as int16 (keyed by the float32 one).
    self.packed = {}
    self.transposed = {}
    if int8_gemm.SUPPORTED and all(w.shape[0] % 4 == 0 for w in all_weights):
      self.packed = {id(w): int8_gemm.pack(w) for w in all_weights}
    else:
      self.transposed = {id(w): np.ascontiguousarray(w.T.astype(np.int16)) for w in all_weights}
    self._warm_up()

  def _warm_up(self) -> None:
    """Runs the forward once per GEMM operand type: at 1 row, and without VNNI also at
    INT_GEMM_MAX_ROWS + 1 (the int16 and float32 kernel specializations), so that compiling them
    (~18 s with an empty numba cache) or loading them from the cache (~1 s) happens at load, not
    inside the first decode that happens to cross INT_GEMM_MAX_ROWS."""
    c = self.config
    storage = [np.zeros((1, c.num_heads, c.head_dim), np.int8)] * c.num_layers
    for rows in (1,) if self.packed else (1, INT_GEMM_MAX_ROWS + 1):
      self.forward_gather(np.zeros(rows, np.int64), storage, storage,
                          np.zeros((rows, 1), np.int64), np.ones(rows, np.int64))

  def operand_dtype(self, rows: int):
    """GEMM operands: int8 through int8_gemm where the CPU has AVX-512 VNNI; elsewhere int16
    through int_gemm for few rows and float32 through BLAS for many. The same exact integers
    every way."""
    if self.packed:
      return np.int8
    return np.int16 if rows <= INT_GEMM_MAX_ROWS else np.float32

  def gemm(self, x, weights):
    """x [R, K] (operand_dtype(R)) @ weights (one of this forward's float32 matrices): exact
    integers, float32 from BLAS or int32 from int8_gemm or int_gemm."""
    if x.dtype == np.int8:
      return int8_gemm.matmul(x, self.packed[id(weights)])
    if x.dtype == np.float32:
      return x @ weights
    out = np.empty((x.shape[0], weights.shape[1]), np.int32)
    int_gemm(x, self.transposed[id(weights)], out)
    return out

  def forward_gather(self, tokens, kv_k, kv_v, hist_idx, hist_len):
    """One new position per row over histories gathered by index from int8 storage.

    Args:
      tokens: int [R] input tokens of the new positions.
      kv_k, kv_v: per layer (indexable by layer) int8 [N, H, hd] key/value storage.
      hist_idx: int [R, T]: row r's history is storage[hist_idx[r, :hist_len[r]]], oldest first
        (later slots are ignored).
      hist_len: int [R] history positions per row.
    Returns:
      per layer int8 new keys and values [R, H, hd], and int64 CDFs [R, NUM_SYMBOLS + 1].
    """
    c = self.config
    tokens = np.asarray(tokens, np.int64)
    hist_idx = np.ascontiguousarray(hist_idx, np.int64)
    hist_len = np.ascontiguousarray(hist_len, np.int64)
    r, hk = tokens.shape[0], c.num_heads * c.head_dim
    if hist_len.size:
      shortest, longest = int(hist_len.min()), int(hist_len.max())
      if longest > MAX_HISTORY:
        raise ValueError(f"histories of at most {MAX_HISTORY:,} positions")
      if longest > hist_idx.shape[1] or shortest < 0:
        raise ValueError(f"hist_len must lie in 0 .. {hist_idx.shape[1]} (hist_idx's columns), "
                         f"got {shortest} .. {longest}")
    gemm = self.gemm
    operand = self.operand_dtype(r)
    h = self.embedding[tokens]  # int64 [R, d], a copy updated in place
    a = np.empty((r, c.d_model), operand)
    o = np.empty((r, hk), operand)
    hidden = np.empty((r, c.mlp_dim), operand)
    new_k, new_v = [], []
    layer_norm(h, *(self.layers[0]["ln1"] if self.layers else self.lnf), self.eps, a)
    for l, w in enumerate(self.layers):
      qkv = np.empty((r, 3 * hk), np.int8)
      requant_int8(gemm(a, w["wqkv"]), w["mqkv"], qkv)
      qkv = qkv.reshape(r, 3, c.num_heads, c.head_dim)
      new_k.append(qkv[:, 1])
      new_v.append(qkv[:, 2])
      attention(qkv, kv_k[l], kv_v[l], hist_idx, hist_len, self.buckets, w["rel_bias"],
                w["score_mult"], w["d_max"], self.attn_exp, o)
      residual_layer_norm(h, gemm(o, w["wo"]), w["mo"], self._zero_bias, *w["ln2"], self.eps, a)
      mlp_hidden(gemm(a, w["wi"]), w["bi"], w["mi"], hidden)
      ln = self.layers[l + 1]["ln1"] if l + 1 < c.num_layers else self.lnf
      residual_layer_norm(h, gemm(hidden, w["wd"]), w["md"], w["bd"], *ln, self.eps, a)
    cdfs = np.empty((r, sym.NUM_SYMBOLS + 1), np.int64)
    logits_to_cdf(gemm(a, self.wz), self.mz, self.logit_exp, cdfs)
    return new_k, new_v, cdfs

  def forward(self, tokens, hist_k, hist_v, hist_len):
    """ExactM1.forward_new's interface: int8-valued float32 histories [R, T, H, hd] per layer."""
    c = self.config
    r = len(tokens)
    t = hist_k[0].shape[1] if len(hist_k) else 0
    flat = lambda x: np.ascontiguousarray(x, np.float32).astype(np.int8).reshape(  # noqa: E731
        r * t, c.num_heads, c.head_dim)
    hist_idx = np.arange(r * t, dtype=np.int64).reshape(r, t)
    return self.forward_gather(tokens, [flat(x) for x in hist_k], [flat(x) for x in hist_v],
                               hist_idx, hist_len)
