"""The exact M1 engine: bit-identical integer CDFs on any device, batch size or backend.

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

The engine (a `CdfModel`): `cdfs(contexts)` returns the CDFs after many window prefixes at once.
Prefixes live in a prefix-sharing KV cache: one node per distinct prefix holds the int8 keys and
values of its last position (in a contiguous chain shared along unbranched paths) and, for short
prefixes, its CDF. Every window starts from the same empty context and short prefixes recur all
the time in text, so most steps are cache hits; misses are computed together as one batch of new
positions, each attending to its own history.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
from typing import Sequence

import numpy as np

from neural_compression import cdf_models
from neural_compression import symbols as sym
from neural_compression.m1 import exact_quantization as eq
from neural_compression.m1 import numpy_inference as ni
from neural_compression.m1.config import M1Config

PRECISION_BITS = 14  # the paper's coder precision
EXACT_K = (1 << 24) // (127 * 127)  # 1040 terms keep int8 dot products exact in float32
MAX_CONTEXT = 1024  # attention sees at most this many positions (the training length)
CDF_CACHE_DEPTH = 64  # prefixes up to this length keep their CDF in the cache


class ExactCheckpointError(ValueError):
  """The exact model is missing, corrupt or inconsistent with the float checkpoint."""


def verify_checkpoint(directory: str | os.PathLike) -> dict:
  """Checks a checkpoint's float and exact files against their sha256; returns the exact config."""
  directory = pathlib.Path(directory)
  ni.load_checkpoint(directory)  # float weights: files, checksum, shapes
  path = directory / eq.EXACT_CONFIG_FILE
  if not path.is_file():
    raise ExactCheckpointError(
        f"{path} is missing: export the exact model with "
        f"`python -m neural_compression.m1.export_exact --checkpoint={directory}`")
  doc = json.loads(path.read_text())
  if doc.get("format") != eq.EXACT_FORMAT:
    raise ExactCheckpointError(f"{path}: format {doc.get('format')!r}, expected {eq.EXACT_FORMAT}")
  data = (directory / doc["exact_file"]).read_bytes()
  if hashlib.sha256(data).hexdigest() != doc["exact_sha256"]:
    raise ExactCheckpointError(f"{directory / doc['exact_file']}: sha256 mismatch, file corrupt")
  float_doc = json.loads((directory / ni.CONFIG_FILE).read_text())
  if doc.get("float_weights_sha256") != float_doc["weights_sha256"]:
    raise ExactCheckpointError(
        f"{path} was exported from other float weights than {directory / ni.WEIGHTS_FILE}: "
        f"re-run `python -m neural_compression.m1.export_exact --checkpoint={directory}`")
  return doc


def _rdiv(n, d):
  """Integer division rounding half up; d > 0."""
  return (2 * n + d) // (2 * d)


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


class ExactM1:
  """The integer forward pass for new positions given their cached history (see module doc)."""

  def __init__(self, arrays: dict, scalars: dict, backend=NumpyBackend):
    self.config = M1Config.from_dict(scalars["model"])
    self.backend = backend
    if hasattr(backend, "setup"):
      backend.setup()
    xp = backend.xp
    self.eps = int(scalars["ln_eps_units"])
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
    if backend.name == "jax":
      from neural_compression.m1 import exact_jax
      self._forward = exact_jax.jitted_forward(self)

  def forward(self, tokens, hist_k, hist_v, hist_len):
    """forward_new through the backend (jitted and shape-bucketed for JAX)."""
    return self._forward(tokens, hist_k, hist_v, hist_len)

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


class _Chain:
  """Contiguous int8 keys/values of one path of the prefix trie: [layers, capacity, H, hd]."""
  __slots__ = ("k", "v", "length")

  def __init__(self, layers, capacity, heads, head_dim):
    self.k = np.zeros((layers, capacity, heads, head_dim), np.int8)
    self.v = np.zeros((layers, capacity, heads, head_dim), np.int8)
    self.length = 0

  def ensure(self, capacity):
    if capacity > self.k.shape[1]:
      new = max(capacity, 2 * self.k.shape[1])
      for name in ("k", "v"):
        old = getattr(self, name)
        grown = np.zeros((old.shape[0], new) + old.shape[2:], np.int8)
        grown[:, :old.shape[1]] = old
        setattr(self, name, grown)


class _Node:
  """One prefix: its last position lives at `chain[pos]`; `cdf` is the next-symbol CDF."""
  __slots__ = ("chain", "pos", "cdf")

  def __init__(self, chain, pos, cdf):
    self.chain = chain
    self.pos = pos
    self.cdf = cdf


class ExactM1Model(cdf_models.CdfModel):
  """`CdfModel` over the exact engine with a prefix-sharing KV cache (see module docstring)."""

  def __init__(self, engine: ExactM1, max_cached_nodes: int = 100_000,
               max_rows: int = 1024, blas_threads: int | None = 1):
    """Args:
      engine: the integer forward.
      max_cached_nodes: prefixes kept before the cache is pruned to depth <= 2.
      max_rows: new positions computed per forward call at most.
      blas_threads: BLAS threads for this process (None: leave as is). The engine's GEMMs are
        small, and with more than one thread they spend their time synchronizing, badly so
        when other processes share the cores (measured 12x slower at 512 rows); scale out with
        one engine per core instead (Beam workers do). Results do not depend on it.
    """
    if blas_threads is not None:
      import threadpoolctl
      threadpoolctl.threadpool_limits(limits=blas_threads, user_api="blas")
    self.engine = engine
    self.max_cached_nodes = max_cached_nodes
    self.max_rows = max_rows
    self._nodes: dict[bytes, _Node] = {}
    self.stats = {"hits": 0, "computed": 0, "calls": 0}

  @property
  def precision_bits(self) -> int:
    return PRECISION_BITS

  def cdf(self, context: np.ndarray) -> np.ndarray:
    return self.cdfs([context])[0]

  def lockstep(self, rows: int) -> "LockstepSession":
    """A session that runs `rows` whole sequences in lockstep (AC's fast path)."""
    return LockstepSession(self, rows)

  def cdfs(self, contexts: Sequence[np.ndarray]) -> np.ndarray:
    """CDFs [len(contexts), NUM_SYMBOLS + 1] after each context (symbols of a segment)."""
    self.stats["calls"] += 1
    contexts = [np.asarray(c, dtype=sym.SYMBOL_DTYPE) for c in contexts]
    out = np.zeros((len(contexts), sym.NUM_SYMBOLS + 1), np.int64)
    pending = {}
    for i, ctx in enumerate(contexts):
      node = self._nodes.get(ctx.tobytes())
      if node is not None and node.cdf is not None:
        out[i] = node.cdf
        self.stats["hits"] += 1
      else:
        pending.setdefault(ctx.tobytes(), []).append(i)
    if pending:
      self._compute({key: contexts[rows[0]] for key, rows in pending.items()})
      for key, rows in pending.items():
        out[rows] = self._last_cdfs[key]
    if len(self._nodes) > self.max_cached_nodes:
      self._prune(contexts)
    return out

  def _compute(self, wanted: dict[bytes, np.ndarray]) -> None:
    """Computes the nodes of `wanted` contexts, missing ancestors first, in batches."""
    self._last_cdfs = {}
    todo = dict(wanted)
    while todo:
      # Each context's first missing prefix (whose parent exists) is computed this round.
      frontier = {}
      for key, ctx in todo.items():
        n = len(ctx)
        while n > 0 and ctx[:n - 1].tobytes() not in self._nodes:
          n -= 1
        prefix = ctx[:n]
        frontier[prefix.tobytes()] = prefix
      items = list(frontier.items())
      for start in range(0, len(items), self.max_rows):
        self._compute_frontier(items[start:start + self.max_rows])
      todo = {k: c for k, c in todo.items() if k not in self._last_cdfs}

  def _compute_frontier(self, items) -> None:
    e = self.engine
    c = e.config
    parents = [self._nodes.get(ctx[:-1].tobytes()) if len(ctx) else None for _, ctx in items]
    tokens = np.array([ctx[-1] if len(ctx) else ni.BOS for _, ctx in items], np.int64)
    starts = [max(0, (pn.pos + 1) - (MAX_CONTEXT - 1)) if pn else 0 for pn in parents]
    hist_len = np.array([(pn.pos + 1 - s) if pn else 0 for pn, s in zip(parents, starts)],
                        np.int64)
    t = int(hist_len.max()) if len(items) else 0
    r = len(items)
    shape = (c.num_layers, r, t, c.num_heads, c.head_dim)
    hk = np.zeros(shape, np.float32)
    hv = np.zeros(shape, np.float32)
    for i, (pn, s) in enumerate(zip(parents, starts)):
      if pn is not None:
        hk[:, i, :hist_len[i]] = pn.chain.k[:, s:pn.pos + 1]
        hv[:, i, :hist_len[i]] = pn.chain.v[:, s:pn.pos + 1]
    b = e.backend
    new_k, new_v, cdfs = e.forward(tokens, list(hk), list(hv), hist_len)
    new_k = np.stack([b.to_numpy(x) for x in new_k]).astype(np.int8)  # [L, R, H, hd]
    new_v = np.stack([b.to_numpy(x) for x in new_v]).astype(np.int8)
    cdfs = b.to_numpy(cdfs).astype(np.int64)
    self.stats["computed"] += r
    for i, ((key, ctx), pn) in enumerate(zip(items, parents)):
      pos = len(ctx)
      if pn is not None and pn.chain.length == pn.pos + 1:
        chain = pn.chain  # the parent ends its chain: extend it in place
      else:
        chain = _Chain(c.num_layers, pos + 8, c.num_heads, c.head_dim)
        if pn is not None:
          chain.k[:, :pos] = pn.chain.k[:, :pos]
          chain.v[:, :pos] = pn.chain.v[:, :pos]
      chain.ensure(pos + 1)
      chain.k[:, pos] = new_k[:, i]
      chain.v[:, pos] = new_v[:, i]
      chain.length = pos + 1
      self._nodes[key] = _Node(chain, pos, cdfs[i] if pos <= CDF_CACHE_DEPTH else None)
      self._last_cdfs[key] = cdfs[i]

  def _prune(self, keep: Sequence[np.ndarray]) -> None:
    """Drops cached prefixes longer than 2 symbols, except the given contexts and parents."""
    kept = {k: n for k, n in self._nodes.items() if len(k) <= 4}  # 2 bytes per uint16 symbol
    for ctx in keep:
      for key in (ctx.tobytes(), ctx[:-1].tobytes()):
        if key in self._nodes:
          kept[key] = self._nodes[key]
    self._nodes = kept


class LockstepSession:
  """Advances many whole sequences one position per step, for AC (no resets, long contexts).

  Every row moves in lockstep, so the attention history of all rows is the same slice of one
  persistent buffer and no per-step gathering is needed. Position i attends to positions
  max(0, i - MAX_CONTEXT + 1) .. i exactly as in ExactM1Model, so the CDFs are identical to the
  prefix-cache path (a test checks it).
  """

  def __init__(self, model: "ExactM1Model", rows: int):
    self.engine = model.engine
    c = self.engine.config
    self._cap = 2 * MAX_CONTEXT
    shape = (rows, self._cap, c.num_heads, c.head_dim)
    self._k = [np.zeros(shape, np.float32) for _ in range(c.num_layers)]
    self._v = [np.zeros(shape, np.float32) for _ in range(c.num_layers)]
    self._start = 0  # absolute position of buffer slot 0
    self.position = 0  # absolute position of the next input token
    self.rows = rows

  def step(self, tokens: np.ndarray | None) -> np.ndarray:
    """Feeds one input token per row (None: BOS for every row, the first step; then each coded
    symbol); returns the CDFs [rows, NUM_SYMBOLS + 1] of the symbol that follows."""
    if tokens is None:
      tokens = np.full(self.rows, ni.BOS, np.int64)
    if self.position - self._start == self._cap:  # slide: keep the last MAX_CONTEXT - 1 slots
      keep = MAX_CONTEXT - 1
      for buf in self._k + self._v:
        buf[:, :keep] = buf[:, self._cap - keep:]
      self._start = self.position - keep
    lo = max(self._start, self.position - (MAX_CONTEXT - 1)) - self._start
    hi = self.position - self._start
    hist_len = np.full(self.rows, hi - lo, np.int64)
    new_k, new_v, cdfs = self.engine.forward(
        np.asarray(tokens, np.int64), [b[:, lo:hi] for b in self._k],
        [b[:, lo:hi] for b in self._v], hist_len)
    b = self.engine.backend
    for buf, new in zip(self._k + self._v, list(new_k) + list(new_v)):
      buf[:, hi] = b.to_numpy(new)
    self.position += 1
    return b.to_numpy(cdfs).astype(np.int64)


def load_exact_arrays(directory: str | os.PathLike) -> tuple[dict, dict]:
  """Reads (arrays, scalars) of the exact model after verifying its checksum."""
  directory = pathlib.Path(directory)
  doc = verify_checkpoint(directory)
  with np.load(directory / doc["exact_file"], allow_pickle=False) as z:
    arrays = {name: z[name] for name in z.files}
  return arrays, doc


def load_exact_model(directory: str | os.PathLike, backend: str = "auto",
                     **kwargs) -> ExactM1Model:
  """Loads the exact M1 from a checkpoint directory as a batched `CdfModel`.

  backend: 'numpy', 'jax', or 'auto' (JAX when a GPU is visible, else numpy).
  """
  arrays, doc = load_exact_arrays(directory)
  return ExactM1Model(ExactM1(arrays, doc, _backend(backend)), **kwargs)


def _backend(name: str):
  if name == "numpy":
    return NumpyBackend
  from neural_compression.m1 import exact_jax
  if name == "jax":
    return exact_jax.JaxBackend
  if name == "auto":
    return exact_jax.JaxBackend if exact_jax.gpu_visible() else NumpyBackend
  raise ValueError(f"unknown backend {name!r}; use numpy, jax or auto")
