"""Export of a float M1 checkpoint to the *exact* integer model the coder uses.

The float model (numpy_inference.NumpyM1) cannot promise the same CDF on every device: BLAS
summation order, fused multiply-adds, transcendental functions and batch shapes all move the last
bits. So the coder never sees float logits. This module turns the float weights, once, into
integers and fixed multipliers (post-training quantization with calibration on train text); the
exact engine (m1/engine/) then computes every CDF from those integers with operations whose
results are the same on any IEEE-754 machine. The exported arrays are stored next to the float
weights (EXACT_FILE) with their sha256, so every platform loads identical integers.

Quantization (per tensor unless said otherwise; "folding" moves a per-input-channel scale into
the next weight's rows before that weight is quantized per output column):
  * residual stream: int64 in units of `res_scale` (calibrated max / 2**RES_BITS);
    embeddings quantized to those units.
  * LayerNorm outputs: int8 with a per-channel scale, folded into the next weight.
  * weights: int8, symmetric, per output column.
  * q, k, v: int8 with a per-head scale; attention probabilities: integers in [0, 127];
    attention output: int8 in the value scale (probabilities sum to ~127).
  * MLP hidden (after ReLU): int8 in [0, 127] with a per-channel scale, folded into `wo`.
  * logits: integers in units of 1/LOGIT_STEPS_PER_NAT nat.
  * exp() for softmax and for the CDF: integer lookup tables built here.
Calibration statistics are high percentiles of |activation| over train-split contexts.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import pathlib
from typing import Iterable, Mapping

import numpy as np

from neural_compression.transformer import numpy_inference as ni
from neural_compression.m1.config import M1Config

EXACT_FILE = "exact.npz"
EXACT_CONFIG_FILE = "exact_config.json"
EXACT_FORMAT = "m1-exact-int8-v1"

RES_BITS = 16  # residual resolution: calibrated max |h| maps to 2**16 units
ATTN_STEPS_PER_NAT = 16  # attention exp table resolution
LOGIT_STEPS_PER_NAT = 32  # CDF exp table resolution
ATTN_TABLE_LEN = 16 * 24  # exp(-24) ~ 4e-11: beyond this a key gets weight 0
LOGIT_TABLE_LEN = 32 * 30
ATTN_ONE = 1 << 15  # exp(0) in the attention table
LOGIT_ONE = 1 << 24  # exp(0) in the logit table
MULT_SHIFT = 24  # fixed-point bits of the score-to-table-index multiplier
LN_FRAC_BITS = 8  # std is computed as isqrt(var * 4**LN_FRAC_BITS) = std * 2**LN_FRAC_BITS
LN_GAIN_BITS = 20  # LayerNorm gain precision
PERCENTILE = 99.99


def _fold_and_quantize(weight: np.ndarray, row_scale: np.ndarray | None):
  """int8 weight [in, out] and per-column scale, after multiplying rows by row_scale."""
  w = weight.astype(np.float64)
  if row_scale is not None:
    w = w * row_scale[:, None]
  col_scale = np.maximum(np.abs(w).max(axis=0), 1e-12) / 127.0
  q = np.clip(np.round(w / col_scale), -127, 127).astype(np.int8)
  return q, col_scale


def _percentile_abs(values: list[np.ndarray], axis=None) -> np.ndarray:
  stacked = np.concatenate([np.abs(v).reshape(-1, v.shape[-1]) for v in values])
  if axis is None:
    return np.percentile(stacked, PERCENTILE)
  return np.percentile(stacked, PERCENTILE, axis=0)


class _Recorder:
  """Collects the float model's intermediate activations over calibration inputs."""

  def __init__(self, config: M1Config, params: Mapping[str, np.ndarray]):
    self.c = config
    self.p = {k: np.asarray(v, np.float32) for k, v in params.items()}
    self.stats: dict[str, list[np.ndarray]] = {}

  def _keep(self, name, x, mask):
    self.stats.setdefault(name, []).append(x[mask])

  def run(self, inputs: np.ndarray, lengths: np.ndarray) -> None:
    c, p = self.c, self.p
    length = inputs.shape[1]
    mask = np.arange(length)[None, :] < lengths[:, None]
    buckets = ni.relative_position_buckets(length, length, c.num_buckets, c.max_distance)
    causal = np.tril(np.ones((length, length), dtype=bool))
    h = p["embed/embedding"][inputs]
    self._keep("residual", h, mask)
    for l in range(c.num_layers):
      pre = f"layers_{l}/"
      a = ni.layer_norm(h, p[pre + "attention_norm/scale"], p[pre + "attention_norm/bias"],
                        c.layer_norm_epsilon)
      self._keep(pre + "attention_norm", a, mask)
      q = np.einsum("bld,dhk->blhk", a, p[pre + "attention/query"])
      k = np.einsum("bld,dhk->blhk", a, p[pre + "attention/key"])
      v = np.einsum("bld,dhk->blhk", a, p[pre + "attention/value"])
      for name, t in (("q", q), ("k", k), ("v", v)):
        self._keep(pre + name, np.abs(t).max(-1), mask)  # per head: max over head_dim
      s = np.einsum("bqhk,bmhk->bhqm", q, k) / np.float32(np.sqrt(c.head_dim))
      s = s + np.transpose(p[pre + "attention/rel_bias"][buckets], (2, 0, 1))[None]
      s = np.where(causal[None, None], s, np.float32(ni.MASK_VALUE))
      s = np.exp(s - s.max(-1, keepdims=True))
      s = s / s.sum(-1, keepdims=True)
      o = np.einsum("bhqm,bmhk->bqhk", s, v)
      h = h + np.einsum("bqhk,hkd->bqd", o, p[pre + "attention/out"])
      self._keep("residual", h, mask)
      m = ni.layer_norm(h, p[pre + "mlp_norm/scale"], p[pre + "mlp_norm/bias"],
                        c.layer_norm_epsilon)
      self._keep(pre + "mlp_norm", m, mask)
      m = np.maximum(m @ p[pre + "mlp/wi"] + p[pre + "mlp/bi"], 0)
      self._keep(pre + "hidden", m, mask)
      h = h + m @ p[pre + "mlp/wo"] + p[pre + "mlp/bo"]
      self._keep("residual", h, mask)
    f = ni.layer_norm(h, p["final_norm/scale"], p["final_norm/bias"], c.layer_norm_epsilon)
    self._keep("final_norm", f, mask)


ROWS_PER_TEXT = 3  # calibration rows cut from every text: at its start, 1/3 and 2/3 in


def _symbols(text) -> np.ndarray:
  if isinstance(text, (bytes, bytearray)):
    return np.frombuffer(bytes(text), np.uint8).astype(np.int32)
  return np.asarray(text, np.int32)  # symbols, EOS (256) included


def calibration_inputs(texts: Iterable, length: int = 256,
                       rows_per_text: int = ROWS_PER_TEXT) -> list:
  """BOS-led input rows of up to `length` symbols, `rows_per_text` from every text (bytes, or
  symbol arrays with EOS), some starting mid-text as windows do. Every text contributes: the
  row count is rows_per_text * len(texts) (fewer only for texts shorter than `length`)."""
  rows = []
  for text in texts:
    data = _symbols(text)
    starts = range(0, max(len(data) - length, 1), max(len(data) // rows_per_text, 1))
    for start in list(starts)[:rows_per_text]:
      rows.append(np.concatenate([[ni.BOS], data[start:start + length - 1]]).astype(np.int32))
  return rows


def _ln_integer_params(scale, bias, out_scale):
  gain = np.round(scale.astype(np.float64) / out_scale * 2.0 ** LN_GAIN_BITS).astype(np.int64)
  offset = np.round(bias.astype(np.float64) / out_scale).astype(np.int64)
  return gain, offset


def export_exact(config: M1Config, params: Mapping[str, np.ndarray],
                 calibration_rows: list[np.ndarray]) -> tuple[dict[str, np.ndarray], dict]:
  """Returns (arrays, scalars) of the exact model from float params and calibration rows."""
  c = config
  rec = _Recorder(config, params)
  for start in range(0, len(calibration_rows), 8):
    batch = calibration_rows[start:start + 8]
    length = max(len(r) for r in batch)
    inputs = np.full((len(batch), length), ni.BOS, np.int32)
    for i, r in enumerate(batch):
      inputs[i, :len(r)] = r
    rec.run(inputs, np.array([len(r) for r in batch]))
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  st = rec.stats
  res_scale = float(np.abs(np.concatenate([x.ravel() for x in st["residual"]])).max()) / 2 ** RES_BITS
  out: dict[str, np.ndarray] = {}
  out["embedding"] = np.round(p["embed/embedding"] / res_scale).astype(np.int64)
  hd = c.head_dim
  for l in range(c.num_layers):
    pre = f"layers_{l}/"
    ln_scale = np.maximum(_percentile_abs(st[pre + "attention_norm"], axis=0), 1e-6) / 127
    out[pre + "ln1_gain"], out[pre + "ln1_offset"] = _ln_integer_params(
        p[pre + "attention_norm/scale"], p[pre + "attention_norm/bias"], ln_scale)
    qkv = {}
    for name in ("query", "key", "value"):
      w = p[pre + f"attention/{name}"].reshape(c.d_model, c.num_heads * hd)
      wq, col = _fold_and_quantize(w, ln_scale)
      head_scale = np.maximum(_percentile_abs(st[pre + name[0]], axis=0), 1e-6) / 127  # [H]
      out[pre + f"w{name[0]}"] = wq
      out[pre + f"m{name[0]}"] = (col / np.repeat(head_scale, hd)).astype(np.float32)
      qkv[name] = head_scale
    # Scores are integer q.k in units of s_q * s_k per head; the softmax scale 1/sqrt(hd) and
    # the table resolution fold into one fixed-point multiplier per head.
    score_unit = qkv["query"] * qkv["key"] / math.sqrt(hd)  # nats per integer score unit
    out[pre + "score_mult"] = np.round(score_unit * ATTN_STEPS_PER_NAT * 2 ** MULT_SHIFT).astype(
        np.int64)
    out[pre + "rel_bias"] = np.round(p[pre + "attention/rel_bias"] / score_unit[None, :]).astype(
        np.int64)  # [buckets, H]
    # Output projection: its input is int8 in the value scale (per head), folded into rows.
    wo = p[pre + "attention/out"].reshape(c.num_heads * hd, c.d_model)
    wo_q, wo_col = _fold_and_quantize(wo, np.repeat(qkv["value"], hd))
    out[pre + "wo"] = wo_q
    out[pre + "mo"] = (wo_col / res_scale).astype(np.float32)
    ln2_scale = np.maximum(_percentile_abs(st[pre + "mlp_norm"], axis=0), 1e-6) / 127
    out[pre + "ln2_gain"], out[pre + "ln2_offset"] = _ln_integer_params(
        p[pre + "mlp_norm/scale"], p[pre + "mlp_norm/bias"], ln2_scale)
    wi_q, wi_col = _fold_and_quantize(p[pre + "mlp/wi"], ln2_scale)
    hid_scale = np.maximum(_percentile_abs(st[pre + "hidden"], axis=0), 1e-6) / 127
    out[pre + "wi"] = wi_q
    out[pre + "bi"] = np.round(p[pre + "mlp/bi"] / wi_col).astype(np.int64)
    out[pre + "mi"] = (wi_col / hid_scale).astype(np.float32)
    wd_q, wd_col = _fold_and_quantize(p[pre + "mlp/wo"], hid_scale)
    out[pre + "wd"] = wd_q
    out[pre + "md"] = (wd_col / res_scale).astype(np.float32)
    out[pre + "bd"] = np.round(p[pre + "mlp/bo"] / res_scale).astype(np.int64)
  lnf_scale = np.maximum(_percentile_abs(st["final_norm"], axis=0), 1e-6) / 127
  out["lnf_gain"], out["lnf_offset"] = _ln_integer_params(
      p["final_norm/scale"], p["final_norm/bias"], lnf_scale)
  w_out = p["output/kernel"][:, :ni.sym.NUM_SYMBOLS]  # PAD is never coded
  wz_q, wz_col = _fold_and_quantize(w_out, lnf_scale)
  out["wz"] = wz_q
  out["mz"] = (wz_col * LOGIT_STEPS_PER_NAT).astype(np.float32)
  # Integer tables: softmax weights and CDF weights by distance from the row maximum.
  out["attn_exp"] = np.round(ATTN_ONE * np.exp(-np.arange(ATTN_TABLE_LEN) / ATTN_STEPS_PER_NAT)
                             ).astype(np.int64)
  out["attn_exp"][-1] = 0  # masked keys land here
  out["logit_exp"] = np.round(LOGIT_ONE * np.exp(-np.arange(LOGIT_TABLE_LEN) / LOGIT_STEPS_PER_NAT)
                              ).astype(np.int64)
  # Relative-position buckets as a table: distance -> bucket (distances past the table use the
  # last entry), so no logarithm is evaluated at inference time.
  out["buckets"] = ni.relative_position_buckets(1, c.max_distance + 2, c.num_buckets,
                                                c.max_distance)[0, ::-1].astype(np.int64)
  eps = max(1, round(c.layer_norm_epsilon / res_scale ** 2))
  scalars = {"format": EXACT_FORMAT, "res_scale": res_scale, "ln_eps_units": int(eps),
             "model": c.to_dict()}
  return out, scalars


def save_exact(directory: str | os.PathLike, arrays: Mapping[str, np.ndarray],
               scalars: dict) -> str:
  """Writes EXACT_FILE and EXACT_CONFIG_FILE (with the arrays' sha256); returns the sha256."""
  directory = pathlib.Path(directory)
  tmp = directory / (EXACT_FILE + ".tmp")
  ni.write_npz(tmp, arrays)
  os.replace(tmp, directory / EXACT_FILE)
  digest = hashlib.sha256((directory / EXACT_FILE).read_bytes()).hexdigest()
  doc = dict(scalars, exact_file=EXACT_FILE, exact_sha256=digest)
  (directory / EXACT_CONFIG_FILE).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
  return digest


def export_checkpoint(directory: str | os.PathLike, calibration_texts: Iterable,
                      calibration_source: str = "") -> str:
  """Adds the exact model to a float checkpoint directory; returns the exact file's sha256.

  calibration_texts: bytes or symbol arrays of the data M1 was trained on (their activation
  ranges set the integer scales); calibration_source names them in exact_config.json.
  exact_config.json also carries the checkpoint's training context (symbols), if it records one.
  """
  config, params, _ = ni.load_checkpoint(directory)
  texts = list(calibration_texts)
  rows = calibration_inputs(texts)
  arrays, scalars = export_exact(config, params, rows)
  doc = json.loads((pathlib.Path(directory) / ni.CONFIG_FILE).read_text())
  scalars["float_weights_sha256"] = doc["weights_sha256"]  # what these integers came from
  scalars["calibration"] = {"source": calibration_source, "texts": len(texts), "rows": len(rows)}
  context = ni.training_context_length(directory)
  if context is not None:
    scalars["context_length"] = context
  return save_exact(directory, arrays, scalars)
