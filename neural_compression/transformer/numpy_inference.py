"""M1 checkpoints and the M1 forward pass in numpy only (no JAX/Flax import).

Workers that compress text need M1's next-symbol distributions but must not need JAX, so this
module is the reference for M1's math; model.py (Flax) computes the same function and a test holds
the two within 1e-4 in the logits.

Input convention. M1 reads *input tokens*: BOS followed by the symbols of the current context.
BOS is the PAD id (257): PAD never occurs as real input, so its embedding row doubles as the
start-of-segment marker (an arithmetic-coded example and every equal-info window start from an
empty context, i.e. from BOS alone). logits[:, i] is the distribution of the symbol that follows
inputs[:, :i + 1], i.e. of symbols[i] when inputs = [BOS] + symbols[:-1].

The model (all float32):
  h = embedding[inputs]
  per layer l:  a = LN(h);  h += Attn_l(a) ;  m = LN(h);  h += relu(m @ wi + bi) @ wo + bo
  logits = LN_final(h) @ output
  Attn: q,k,v = einsum('bld,dhk->blhk'); s = q.k / sqrt(head_dim) + rel_bias_l[bucket(j - i)];
        causal mask; softmax over keys; out = einsum('bhqk,bkhd->bqhd') then einsum with o.

Checkpoint format (a directory):
  config.json: {"format": CHECKPOINT_FORMAT, "model": M1Config fields, "weights_file": name,
                "weights_sha256": hex sha256 of that file, "context_length": the training
                window in symbols (absent in older checkpoints), "metadata": {...}}
  weights.npz: float32 arrays keyed by '/'-joined Flax parameter paths (PARAM_NAMES).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import zipfile
from typing import Mapping, Sequence

import numpy as np

from neural_compression import symbols as sym
from neural_compression.m1.config import M1Config

BOS = sym.PAD  # start-of-segment input token (see the module docstring)
CHECKPOINT_FORMAT = "m1-npz-v1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.npz"
MASK_VALUE = -1e9  # added to masked attention scores; exp() underflows to exactly 0 in float32
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed timestamps make the npz bytes (and sha256) reproducible


class CheckpointError(ValueError):
  """A checkpoint directory is missing files, fails its checksum or has wrong shapes."""


def relative_position_buckets(query_len: int, key_len: int, num_buckets: int,
                              max_distance: int) -> np.ndarray:
  """T5's causal relative-position buckets, shape [query_len, key_len], int32.

  Distance n = query position - key position (>= 0 for visible keys; future keys get bucket 0 and
  are masked anyway). Distances below num_buckets // 2 get their own bucket; larger ones share
  logarithmically wider buckets up to max_distance, beyond which all use the last bucket.
  Queries and keys are aligned at the end, so query i is at absolute position
  key_len - query_len + i.
  """
  q = np.arange(key_len - query_len, key_len, dtype=np.int64)[:, None]
  k = np.arange(key_len, dtype=np.int64)[None, :]
  n = np.maximum(q - k, 0)
  max_exact = num_buckets // 2
  # float64 log, then truncation: the same integers on every platform for these small ranges.
  large = max_exact + (np.log(np.maximum(n, max_exact) / max_exact)
                       / np.log(max_distance / max_exact) * (num_buckets - max_exact)).astype(np.int64)
  large = np.minimum(large, num_buckets - 1)
  return np.where(n < max_exact, n, large).astype(np.int32)


def param_shapes(config: M1Config) -> dict[str, tuple[int, ...]]:
  """Returns every parameter's '/'-joined name and shape (the checkpoint's keys)."""
  d, h, k, f, v = (config.d_model, config.num_heads, config.head_dim, config.mlp_dim,
                   config.vocab_size)
  shapes = {"embed/embedding": (v, d)}
  for l in range(config.num_layers):
    p = f"layers_{l}"
    shapes.update({
        f"{p}/attention_norm/scale": (d,), f"{p}/attention_norm/bias": (d,),
        f"{p}/attention/query": (d, h, k), f"{p}/attention/key": (d, h, k),
        f"{p}/attention/value": (d, h, k), f"{p}/attention/out": (h, k, d),
        f"{p}/attention/rel_bias": (config.num_buckets, h),
        f"{p}/mlp_norm/scale": (d,), f"{p}/mlp_norm/bias": (d,),
        f"{p}/mlp/wi": (d, f), f"{p}/mlp/bi": (f,), f"{p}/mlp/wo": (f, d), f"{p}/mlp/bo": (d,),
    })
  shapes.update({"final_norm/scale": (d,), "final_norm/bias": (d,), "output/kernel": (d, v)})
  return shapes


def layer_norm(x: np.ndarray, scale: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
  mean = x.mean(-1, keepdims=True)
  var = np.square(x - mean).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + np.float32(eps)) * scale + bias


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
  x = x - x.max(axis=axis, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


class NumpyM1:
  """M1's forward pass over whole contexts (no KV cache), float32 numpy."""

  def __init__(self, config: M1Config, params: Mapping[str, np.ndarray]):
    expected = param_shapes(config)
    if set(params) != set(expected):
      raise CheckpointError(f"parameter names differ: missing {sorted(set(expected) - set(params))}"
                            f", unexpected {sorted(set(params) - set(expected))}")
    for name, shape in expected.items():
      if tuple(params[name].shape) != shape:
        raise CheckpointError(f"{name}: shape {params[name].shape}, config needs {shape}")
    self.config = config
    self.params = {n: np.asarray(a, dtype=np.float32) for n, a in params.items()}

  def logits(self, inputs: np.ndarray) -> np.ndarray:
    """Returns float32 logits [B, L, vocab_size] for input tokens [B, L] (BOS first; see above).

    Positions after a sequence's end may hold PAD: attention is causal, so they never change the
    logits of earlier positions.
    """
    c, p = self.config, self.params
    inputs = np.asarray(inputs)
    if inputs.ndim != 2:
      raise ValueError(f"inputs are [batch, length], got shape {inputs.shape}")
    if inputs.size and (inputs.min() < 0 or inputs.max() >= c.vocab_size):
      raise ValueError(f"input tokens must lie in [0, {c.vocab_size})")
    length = inputs.shape[1]
    buckets = relative_position_buckets(length, length, c.num_buckets, c.max_distance)
    causal = np.tril(np.ones((length, length), dtype=bool))
    h = p["embed/embedding"][inputs]
    for l in range(c.num_layers):
      pre = f"layers_{l}/"
      a = layer_norm(h, p[pre + "attention_norm/scale"], p[pre + "attention_norm/bias"],
                     c.layer_norm_epsilon)
      q = np.einsum("bld,dhk->blhk", a, p[pre + "attention/query"])
      k = np.einsum("bld,dhk->blhk", a, p[pre + "attention/key"])
      v = np.einsum("bld,dhk->blhk", a, p[pre + "attention/value"])
      s = np.einsum("bqhk,bmhk->bhqm", q, k) / np.float32(np.sqrt(c.head_dim))
      s = s + np.transpose(p[pre + "attention/rel_bias"][buckets], (2, 0, 1))[None]
      s = np.where(causal[None, None], s, np.float32(MASK_VALUE))
      s = np.exp(s - s.max(-1, keepdims=True))
      s = s / s.sum(-1, keepdims=True)
      o = np.einsum("bhqm,bmhk->bqhk", s, v)
      h = h + np.einsum("bqhk,hkd->bqd", o, p[pre + "attention/out"])
      m = layer_norm(h, p[pre + "mlp_norm/scale"], p[pre + "mlp_norm/bias"], c.layer_norm_epsilon)
      m = np.maximum(m @ p[pre + "mlp/wi"] + p[pre + "mlp/bi"], 0)
      h = h + m @ p[pre + "mlp/wo"] + p[pre + "mlp/bo"]
    h = layer_norm(h, p["final_norm/scale"], p["final_norm/bias"], c.layer_norm_epsilon)
    return (h @ p["output/kernel"]).astype(np.float32)

  def next_symbol_log_probs(self, prefixes: Sequence[np.ndarray]) -> np.ndarray:
    """Natural-log probabilities [B, NUM_SYMBOLS] of the symbol following each prefix.

    Each prefix is a context of coder symbols (bytes and EOS), possibly empty; prefixes may differ
    in length (they are right-padded with PAD, which causality makes harmless). The distribution
    is renormalized over the NUM_SYMBOLS coder symbols (PAD is never coded).
    """
    if not len(prefixes):
      return np.zeros((0, sym.NUM_SYMBOLS), np.float32)
    prefixes = [sym.validate_symbols(np.asarray(x, dtype=np.int64)) for x in prefixes]
    length = 1 + max(len(x) for x in prefixes)
    inputs = np.full((len(prefixes), length), sym.PAD, dtype=np.int32)
    inputs[:, 0] = BOS
    for i, x in enumerate(prefixes):
      inputs[i, 1:1 + len(x)] = x
    ends = np.array([len(x) for x in prefixes])
    logits = self.logits(inputs)[np.arange(len(prefixes)), ends, :sym.NUM_SYMBOLS]
    return log_softmax(logits.astype(np.float64)).astype(np.float32)

  def sequence_bits(self, symbols: np.ndarray) -> np.ndarray:
    """Bits (-log2 p) of every symbol of a segment coded from an empty context, float64 [N]."""
    symbols = sym.validate_symbols(np.asarray(symbols, dtype=np.int64)).astype(np.int64)
    inputs = np.concatenate([[BOS], symbols[:-1]]).astype(np.int32)[None]
    logp = log_softmax(self.logits(inputs)[0, :, :sym.NUM_SYMBOLS].astype(np.float64))
    return -logp[np.arange(len(symbols)), symbols] / np.log(2.0)


def _sha256(path: pathlib.Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def write_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
  """Writes arrays as an uncompressed .npz whose bytes depend only on the arrays (sorted keys,
  fixed zip timestamps), so that equal weights give an equal sha256."""
  with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
    for name in sorted(arrays):
      buf = io.BytesIO()
      np.lib.format.write_array(buf, np.asarray(arrays[name]), allow_pickle=False)
      zf.writestr(zipfile.ZipInfo(name + ".npy", date_time=_ZIP_DATE), buf.getvalue())


def save_checkpoint(directory: str | os.PathLike, config: M1Config,
                    params: Mapping[str, np.ndarray], metadata: Mapping | None = None,
                    context_length: int | None = None) -> str:
  """Writes config.json + weights.npz (float32) into `directory` atomically per file.

  context_length: the window (symbols) the model was trained on, the longest context it has
  seen; recorded so that inference can attend to no more (see training_context_length).

  Returns the weights' sha256. The config is written last, so a reader that finds a config.json
  whose checksum matches has a complete checkpoint.
  """
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  expected = param_shapes(config)
  if set(params) != set(expected):
    raise CheckpointError(f"parameter names differ from the config's: "
                          f"{sorted(set(params) ^ set(expected))}")
  weights = {n: np.asarray(a, dtype=np.float32) for n, a in params.items()}
  tmp = directory / (WEIGHTS_FILE + ".tmp")
  write_npz(tmp, weights)
  os.replace(tmp, directory / WEIGHTS_FILE)
  digest = _sha256(directory / WEIGHTS_FILE)
  doc = {"format": CHECKPOINT_FORMAT, "model": config.to_dict(), "weights_file": WEIGHTS_FILE,
         "weights_sha256": digest, "metadata": dict(metadata or {})}
  if context_length is not None:
    doc["context_length"] = int(context_length)
  tmp = directory / (CONFIG_FILE + ".tmp")
  tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
  os.replace(tmp, directory / CONFIG_FILE)
  return digest


def load_checkpoint(directory: str | os.PathLike) -> tuple[M1Config, dict[str, np.ndarray], dict]:
  """Reads a checkpoint directory; returns (config, float32 params, config.json's metadata).

  Raises CheckpointError if a file is missing, the sha256 differs or shapes disagree.
  """
  directory = pathlib.Path(directory)
  cfg_path = directory / CONFIG_FILE
  if not cfg_path.is_file():
    raise CheckpointError(f"{cfg_path} is missing: not an M1 checkpoint")
  doc = json.loads(cfg_path.read_text())
  if doc.get("format") != CHECKPOINT_FORMAT:
    raise CheckpointError(f"{cfg_path}: format {doc.get('format')!r}, expected {CHECKPOINT_FORMAT}")
  config = M1Config.from_dict(doc["model"])
  weights_path = directory / doc["weights_file"]
  if not weights_path.is_file():
    raise CheckpointError(f"{weights_path} is missing")
  digest = _sha256(weights_path)
  if digest != doc["weights_sha256"]:
    raise CheckpointError(f"{weights_path}: sha256 {digest} != {doc['weights_sha256']} in config")
  with np.load(weights_path, allow_pickle=False) as z:
    params = {name: z[name].astype(np.float32) for name in z.files}
  NumpyM1(config, params)  # validates names and shapes
  return config, params, doc.get("metadata", {})


def training_context_length(directory: str | os.PathLike) -> int | None:
  """The window (symbols) a checkpoint was trained on, or None if it does not say.

  Read from config.json's "context_length"; checkpoints written before that field existed (the
  shipped M1 among them) record it only in their training command (metadata "command": its
  `--seq_len N`, the trainer's flag), which is read instead.
  """
  doc = json.loads((pathlib.Path(directory) / CONFIG_FILE).read_text())
  if "context_length" in doc:
    return int(doc["context_length"])
  command = str(doc.get("metadata", {}).get("command", "")).strip("`").split()
  for flag, value in zip(command, command[1:]):
    if flag == "--seq_len":
      return int(value)
    if flag.startswith("--seq_len="):
      return int(flag.split("=", 1)[1])
  if command and command[-1].startswith("--seq_len="):
    return int(command[-1].split("=", 1)[1])
  return None


def load_model(directory: str | os.PathLike) -> NumpyM1:
  """Loads a checkpoint directory into a NumpyM1."""
  config, params, _ = load_checkpoint(directory)
  return NumpyM1(config, params)
