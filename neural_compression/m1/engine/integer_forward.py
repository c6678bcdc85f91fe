"""The exact M1 engine's integer forward pass: bit-identical CDFs on any device, batch or backend.

Why it is exact. The CDF handed to the coder is a pure function of (exact checkpoint, window
prefix) because every operation below has one possible result:
  * Matrix products multiply int8-valued float32 operands. With K terms of |a|, |b| <= 127 every
    partial sum is an integer of magnitude <= K * 127**2, which stays below 2**24 for
    K <= EXACT_K = 1040, so float32 represents every partial sum exactly and *any* summation
    order (CPU BLAS blocking, GPU tensor-core tiling, TF32 or bf16 inputs with fp32
    accumulation, since int8 values are exact in both) yields the same integer. Longer sums are
    split into chunks of at most EXACT_K terms whose (exact) results are added in int64.
  * A requantization is one float32 multiply of an exact integer by a stored float32 constant,
    then round-half-to-even: IEEE 754 correctly rounds a single multiply, and no add follows
    that a compiler could fuse into an FMA. No product here is subnormal.
  * LayerNorm, softmax and the logits-to-CDF step use int64 only: sums, integer division,
    shifts, an integer square root (Newton's method corrected to the exact floor), and exp()
    by lookup tables stored in the checkpoint (exact_quantization).
  * Every reduction is an integer sum (order-free); argsort ranks unique integer keys.
Padding and batching never enter a row's arithmetic: masked keys get table weight exactly 0 and
each row's values are computed from its own integers only. So a row's CDF is the same at batch
1 or 512, in any position, with any padding, in numpy or JAX, on CPU or GPU.

Backends: `NumpyBackend` here is the readable reference; JAX (jax_backend) runs this same code
jitted; the compiled CPU backend (compiled_forward, numba) runs the same GEMMs on BLAS and
writes every other step above per row as integer loops: the same integers, by the argument
above (exact sums in any order, one correctly rounded float32 multiply per requantization,
int64 elsewhere), with its divisions and int8 x int8 -> int32 attention sums shown exact in its
module docstring, and tests comparing it with numpy bit for bit.
"""
from __future__ import annotations

import contextlib

import numpy as np

from neural_compression import symbols as sym
from neural_compression.m1 import exact_quantization as eq
from neural_compression.m1.config import M1Config
from neural_compression.methods import PRECISION_BITS

EXACT_K = (1 << 24) // (127 * 127)  # 1040 terms keep int8 dot products exact in float32
# Attention sees at most the checkpoint's training context (symbols): the window it was trained
# on, the longest context it has seen (checkpoint.context_length reads it; the shipped M1 trained
# at 512). A checkpoint that records none gets the paper's training length.
PAPER_CONTEXT = 1024


class NumpyBackend:
  """numpy ops for the integer forward (the reference backend)."""
  name = "numpy"
  xp = np

  @staticmethod
  def asarray(x, dtype=None):
    return np.asarray(x, dtype=dtype)

  @staticmethod
  def to_numpy(x):
    return np.asarray(x)

  @staticmethod
  def scope():
    """numpy needs no process settings (JAX's backend scopes 64-bit integers here)."""
    return contextlib.nullcontext()


def _rdiv(n, d):
  """Integer division rounding half up; d > 0."""
  return (2 * n + d) // (2 * d)


class ExactM1:
  """The integer forward pass for new positions given their cached history (see module doc)."""

  def __init__(self, arrays: dict, scalars: dict, backend=NumpyBackend,
               max_context: int = PAPER_CONTEXT):
    """max_context: positions (symbols, the start token included) a position attends to at
    most: the new one and the max_context - 1 before it."""
    if max_context < 1:
      raise ValueError(f"max_context must be at least 1 symbol, got {max_context}")
    self.config = M1Config.from_dict(scalars["model"])
    self.max_context = int(max_context)
    self.eps = int(scalars["ln_eps_units"])
    self.backend = backend
    with backend.scope():
      self._load(arrays)

  def _load(self, arrays: dict) -> None:
    backend = self.backend
    if hasattr(backend, "setup"):
      backend.setup()
    xp = backend.xp
    self.p = {}
    for name, a in arrays.items():
      if a.dtype == np.int8:
        a = a.astype(np.float32)  # int8 values, exact in float32 (the GEMM operands)
      self.p[name] = backend.asarray(a)
    mults = [arrays[f"layers_{l}/score_mult"] for l in range(self.config.num_layers)]
    # Differences beyond these map past the table's end, so clamping them first keeps
    # d * mult inside int64 without changing any table index.
    self.d_max = [backend.asarray(
        (eq.ATTN_TABLE_LEN << eq.MULT_SHIFT) // np.maximum(m, 1) + 1) for m in mults]
    self.xp = xp
    self._forward = self.forward_new
    self._compiled = None
    if backend.name == "jax":
      from neural_compression.m1.engine import jax_backend
      self._forward = jax_backend.jitted_forward(self)
    elif backend.name == "compiled":
      from neural_compression.m1.engine import compiled_forward
      self._compiled = compiled_forward.CompiledForward(self)
      self._forward = self._compiled.forward

  def forward(self, tokens, hist_k, hist_v, hist_len):
    """forward_new through the backend (jitted and shape-bucketed for JAX), inside the
    backend's scope; returns numpy arrays: per layer int8 new keys and values [R, H, hd], and
    int64 CDFs [R, NUM_SYMBOLS + 1]."""
    b = self.backend
    with b.scope():
      new_k, new_v, cdfs = self._forward(tokens, hist_k, hist_v, hist_len)
      return ([b.to_numpy(x).astype(np.int8) for x in new_k],
              [b.to_numpy(x).astype(np.int8) for x in new_v], b.to_numpy(cdfs).astype(np.int64))

  def forward_gather(self, tokens, kv_k, kv_v, hist_idx, hist_len):
    """`forward` over histories gathered from int8 storage: kv_k, kv_v per layer int8
    [N, H, hd] (e.g. the prefix cache's nodes), row r's history storage[hist_idx[r, t]] for
    t < hist_len[r] (later slots are padding, any valid index). Returns what `forward` returns.
    The compiled backend reads the storage in place; the others gather it into float32
    [R, T, H, hd] first."""
    if self._compiled is not None:
      return self._compiled.forward_gather(tokens, kv_k, kv_v, hist_idx, hist_len)
    hist_k = [np.asarray(k)[hist_idx].astype(np.float32) for k in kv_k]
    hist_v = [np.asarray(v)[hist_idx].astype(np.float32) for v in kv_v]
    return self.forward(tokens, hist_k, hist_v, hist_len)

  # Integer building blocks -------------------------------------------------------------------

  def _matmul(self, a, b):
    """Exact product of int8-valued float32 operands; float32 if it fits, else int64."""
    xp = self.xp
    k = a.shape[-1]
    if k <= EXACT_K:
      return a @ b
    total = 0
    for s in range(0, k, EXACT_K):
      total = total + (a[..., s:s + EXACT_K] @ b[s:s + EXACT_K]).astype(xp.int64)
    return total.astype(xp.float32)  # deterministic rounding of an exact integer

  def _requant(self, acc, mult, lo, hi):
    xp = self.xp
    return xp.clip(xp.round(acc.astype(xp.float32) * mult), lo, hi)

  def _isqrt(self, v):
    """floor(sqrt(v)) for int64 v >= 1: a float guess from above, corrected by Newton steps."""
    xp = self.xp
    x = xp.floor(xp.sqrt(v.astype(xp.float64))).astype(xp.int64) + 2
    for _ in range(6):
      x = xp.minimum(x, (x + v // x) // 2)
    return x

  def _layer_norm(self, h, gain, offset):
    """int64 residual [R, d] -> int8-valued float32 [R, d] (gain/offset folded, see export)."""
    xp = self.xp
    d = h.shape[-1]
    centered = h - _rdiv(h.sum(-1, keepdims=True), d)
    var = (centered * centered).sum(-1, keepdims=True) // d + self.eps
    std = self._isqrt(var << (2 * eq.LN_FRAC_BITS))  # std * 2**F
    y = _rdiv(centered * gain, std << (eq.LN_GAIN_BITS - eq.LN_FRAC_BITS)) + offset
    return xp.clip(y, -127, 127).astype(xp.float32)

  # The forward pass ---------------------------------------------------------------------------

  def forward_new(self, tokens, hist_k, hist_v, hist_len):
    """Computes one new position per row.

    Args:
      tokens: int [R] input tokens of the new positions.
      hist_k, hist_v: per layer, int8-valued float32 [R, T, H, hd]: keys/values of the T
        positions before the new one, left-aligned; slots >= hist_len are padding.
      hist_len: int [R] valid history positions per row.
    Returns:
      (new_k, new_v) per layer int8-valued float32 [R, H, hd], and int64 CDFs [R, NUM_SYMBOLS+1].
    """
    xp, p, c = self.xp, self.p, self.config
    r = tokens.shape[0]
    h = p["embedding"][tokens]  # int64 [R, d]
    t = hist_k[0].shape[1] if hist_k else 0
    slots = xp.arange(t)
    valid = slots[None, :] < hist_len[:, None]  # [R, T]
    dist = xp.clip(hist_len[:, None] - slots[None, :], 0, p["buckets"].shape[0] - 1)
    bucket = p["buckets"][dist]  # [R, T]
    self_bucket = p["buckets"][0]
    new_k, new_v = [], []
    for l in range(c.num_layers):
      pre = f"layers_{l}/"
      a = self._layer_norm(h, p[pre + "ln1_gain"], p[pre + "ln1_offset"])
      shape = (r, c.num_heads, c.head_dim)
      q = self._requant(self._matmul(a, p[pre + "wq"]), p[pre + "mq"], -127, 127).reshape(shape)
      k = self._requant(self._matmul(a, p[pre + "wk"]), p[pre + "mk"], -127, 127).reshape(shape)
      v = self._requant(self._matmul(a, p[pre + "wv"]), p[pre + "mv"], -127, 127).reshape(shape)
      new_k.append(k)
      new_v.append(v)
      rel = p[pre + "rel_bias"]  # int64 [buckets, H]
      # Scores in integer units: <= head_dim * 127**2, exact in float32.
      hist_scores = xp.einsum("rhk,rthk->rht", q, hist_k[l]).astype(xp.int64) + \
          xp.transpose(rel[bucket], (0, 2, 1))
      self_score = (q * k).sum(-1).astype(xp.int64) + rel[self_bucket][None, :]  # [R, H]
      # hist_scores' float32 sum above is exact too: each term and partial sum is an integer
      # below 2**24 (head_dim * 127**2).
      floor = xp.asarray(-(1 << 40), dtype=xp.int64)
      hist_scores = xp.where(valid[:, None, :], hist_scores, floor)
      top = xp.maximum(hist_scores.max(-1) if t else floor, self_score)  # [R, H]
      dmax = self.d_max[l][None, :]
      def weights(s):
        diff = xp.minimum(top[..., None] - s, dmax[..., None]) if s.ndim == 3 else \
            xp.minimum(top - s, dmax)
        mult = p[pre + "score_mult"][None, :, None] if s.ndim == 3 else \
            p[pre + "score_mult"][None, :]
        idx = xp.minimum((diff * mult + (1 << (eq.MULT_SHIFT - 1))) >> eq.MULT_SHIFT,
                         eq.ATTN_TABLE_LEN - 1)
        return p["attn_exp"][idx]
      w_hist = weights(hist_scores)  # int64 [R, H, T]; masked slots -> 0
      w_self = weights(self_score)  # [R, H]
      total = w_hist.sum(-1) + w_self
      prob_hist = ((w_hist * 254 + total[..., None]) // (2 * total[..., None])).astype(xp.float32)
      prob_self = ((w_self * 254 + total) // (2 * total)).astype(xp.float32)
      o = self._attend(prob_hist, hist_v[l]) + (prob_self[..., None] * v).astype(xp.int64)
      o = xp.clip(_rdiv(o, 127), -127, 127).astype(xp.float32).reshape(r, -1)
      h = h + xp.round(self._matmul(o, p[pre + "wo"]) * p[pre + "mo"]).astype(xp.int64)
      m = self._layer_norm(h, p[pre + "ln2_gain"], p[pre + "ln2_offset"])
      acc = self._matmul(m, p[pre + "wi"]).astype(xp.int64) + p[pre + "bi"]
      hidden = self._requant(xp.maximum(acc, 0), p[pre + "mi"], 0, 127)
      h = h + xp.round(self._matmul(hidden, p[pre + "wd"]) * p[pre + "md"]).astype(xp.int64) \
          + p[pre + "bd"]
    f = self._layer_norm(h, p["lnf_gain"], p["lnf_offset"])
    z = xp.round(self._matmul(f, p["wz"]) * p["mz"]).astype(xp.int64)  # [R, 257] 1/32-nat units
    return new_k, new_v, self._logits_to_cdf(z)

  def _attend(self, probs, values):
    """int64 [R, H, hd] = sum_t probs[R, H, t] * values[R, t, H, hd], exactly (chunks of T)."""
    xp = self.xp
    t = probs.shape[-1]
    total = 0
    for s in range(0, max(t, 1), EXACT_K):
      total = total + xp.einsum("rht,rthk->rhk", probs[..., s:s + EXACT_K],
                                values[:, s:s + EXACT_K]).astype(xp.int64)
    return total

  def _logits_to_cdf(self, z):
    """Integer logits [R, 257] -> CDF [R, 258] summing to 2**P, every count >= 1."""
    xp, p = self.xp, self.p
    n = sym.NUM_SYMBOLS
    idx = xp.minimum(z.max(-1, keepdims=True) - z, eq.LOGIT_TABLE_LEN - 1)
    e = p["logit_exp"][idx]  # int64, the maximum gets LOGIT_ONE
    total = e.sum(-1, keepdims=True)
    spare = (1 << PRECISION_BITS) - n
    base = e * spare // total
    remainder = e * spare - base * total
    left = spare - base.sum(-1, keepdims=True)
    # Largest remainders get the leftover units; ties go to the lower symbol. Keys are unique.
    key = remainder * 512 + (511 - xp.arange(n))[None, :]
    descending = -xp.sort(-key, axis=-1)
    threshold = xp.take_along_axis(descending, xp.maximum(left - 1, 0), axis=-1)
    freq = 1 + base + ((key >= threshold) & (left > 0)).astype(xp.int64)
    return xp.concatenate([xp.zeros((z.shape[0], 1), xp.int64), xp.cumsum(freq, -1)], -1)


