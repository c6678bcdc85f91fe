"""The training loop M1 and M2 share: loss, optimizer, rsqrt schedule, data parallelism,
checkpoints of the training state, and the step loop with logging, evaluation and signals.

Each trainer (neural_compression.m1.train, neural_compression.m2.train) brings only its data, its
evaluation and its exports; everything here is model- and data-agnostic.

Loss: cross-entropy in nats per token over targets of weight 1, plus z_loss * logsumexp(logits)^2.
Optimizer: Adafactor (the paper) or Adam, rsqrt schedule lr(step) = lr_base * min(1, step/warmup)
/ sqrt(max(step, warmup)) (linear ramp, then the paper's 1/sqrt(step) decay).
Checkpoints: out_dir/state_<step>.npz (params + optimizer state + step + a JSON `extra`), the
last `keep` kept, written atomically.
Data parallel: one mesh axis over all devices of all hosts; parameters replicated, batch rows
sharded; every host passes its own rows (jax.make_array_from_process_local_data).
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
import signal
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from neural_compression.transformer import model as transformer_model
from neural_compression.transformer import numpy_inference as ni
from neural_compression.transformer.config import TransformerConfig

LN2 = math.log(2.0)


def _loss_sums(params, batch, model, z_loss):
  """(weighted sum of ce + z-loss terms, (weighted ce sum nats, weight sum)) over a batch."""
  logits = model.apply({"params": params}, batch["inputs"], batch["segment_ids"])
  logits = logits.astype(jnp.float32)
  lse = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, batch["targets"][..., None], axis=-1)[..., 0]
  w = batch["weights"]
  ce = ((lse - target_logit) * w).sum()
  return ce + z_loss * (jnp.square(lse) * w).sum(), (ce, w.sum())


def loss_fn(params, batch, model, z_loss):
  """Returns (loss, (cross-entropy nats/token, weight sum)); weights mask padding targets."""
  total, (ce, weight) = _loss_sums(params, batch, model, z_loss)
  denom = jnp.maximum(weight, 1.0)
  return total / denom, (ce / denom, weight)


def rsqrt_schedule(lr_base: float, warmup_steps: int, xp=jnp):
  """lr(count) for the update after `count` earlier updates; xp=np gives a host-side copy."""
  warmup = max(1, warmup_steps)

  def schedule(count):
    step = xp.asarray(count, xp.float32) + 1.0  # the first update uses step 1
    return lr_base * xp.minimum(1.0, step / warmup) / xp.sqrt(xp.maximum(step, warmup))
  return schedule


def make_optimizer(name: str, schedule, grad_clip: float):
  """'adafactor' (optax defaults = T5X's M1/M2 setting) or 'adam', after global-norm clipping."""
  if name == "adafactor":
    # Factored second moments, update clipping 1.0, updates scaled by parameter RMS, no momentum.
    opt = optax.adafactor(learning_rate=schedule)
  elif name == "adam":
    opt = optax.adam(learning_rate=schedule, b1=0.9, b2=0.98, eps=1e-9)
  else:
    raise ValueError(f"unknown optimizer {name!r}")
  if grad_clip > 0:
    opt = optax.chain(optax.clip_by_global_norm(grad_clip), opt)
  return opt


@functools.lru_cache(maxsize=8)
def compiled_train_step(config: TransformerConfig, optimizer_name: str, lr_base: float,
                        warmup_steps: int, grad_clip: float, z_loss: float,
                        microbatches: int = 1):
  """Returns jitted (train_step(params, opt_state, batch) -> (params, opt_state, loss, ce,
  weight), optimizer init); cached so that repeated trainings with the same settings (resumes,
  tests) reuse the compiled executables.

  microbatches > 1 computes the same update (the gradient of the batch's mean loss) from that
  many slices of the batch's rows in sequence (rows j, j + m, j + 2m, ...: every slice spans all
  devices), so activation memory shrinks m-fold; the batch size must divide by m.
  """
  model = transformer_model.DecoderTransformer(config)
  optimizer = make_optimizer(optimizer_name, rsqrt_schedule(lr_base, warmup_steps), grad_clip)
  if microbatches < 1:
    raise ValueError(f"microbatches must be >= 1, got {microbatches}")

  def grads_and_loss(params, batch):
    if microbatches == 1:
      grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
      return grad_fn(params, batch, model, z_loss)
    rows = batch["inputs"].shape[0]
    if rows % microbatches:
      raise ValueError(f"batch of {rows} rows does not split into {microbatches} microbatches")
    micro = jax.tree_util.tree_map(
        lambda x: x.reshape((rows // microbatches, microbatches) + x.shape[1:]).swapaxes(0, 1),
        batch)
    grad_fn = jax.value_and_grad(_loss_sums, has_aux=True)

    def body(carry, mb):
      (loss, (ce, weight)), grads = grad_fn(params, mb, model, z_loss)
      acc_grads, acc_loss, acc_ce, acc_weight = carry
      return (jax.tree_util.tree_map(jnp.add, acc_grads, grads), acc_loss + loss, acc_ce + ce,
              acc_weight + weight), None
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    (grads, loss, ce, weight), _ = jax.lax.scan(
        body, (zeros, jnp.float32(0), jnp.float32(0), jnp.float32(0)), micro)
    denom = jnp.maximum(weight, 1.0)
    return (loss / denom, (ce / denom, weight)), jax.tree_util.tree_map(
        lambda g: g / denom, grads)

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def train_step(params, opt_state, batch):
    (loss, (ce, weight)), grads = grads_and_loss(params, batch)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, ce, weight
  return train_step, jax.jit(optimizer.init)


class DataParallel:
  """One 'data' mesh axis over every device of every host: replicate state, shard batch rows."""

  def __init__(self, global_batch_size: int):
    devices = jax.devices()
    if global_batch_size % len(devices):
      raise ValueError(f"--batch_size {global_batch_size} must divide over {len(devices)} "
                       "devices")
    self.num_hosts, self.host = jax.process_count(), jax.process_index()
    self.global_batch_size = global_batch_size
    self.local_batch_size = global_batch_size // self.num_hosts  # rows this host feeds
    mesh = Mesh(np.array(devices), ("data",))
    self.replicated = NamedSharding(mesh, PartitionSpec())
    self.rows = NamedSharding(mesh, PartitionSpec("data"))

  def replicate(self, tree):
    return jax.device_put(tree, self.replicated)

  def put_batch(self, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """This host's rows (local_batch_size each) -> global arrays sharded over all devices."""
    return {k: jax.make_array_from_process_local_data(self.rows, v)
            for k, v in local_batch.items()}


# ------------------------------------------------------------------------------ checkpoints

def _flat_state(tree) -> list[np.ndarray]:
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def state_path(out_dir: pathlib.Path, step: int) -> pathlib.Path:
  return pathlib.Path(out_dir) / f"state_{step:09d}.npz"


def save_state(out_dir: pathlib.Path, step: int, params, opt_state, keep: int,
               extra: dict) -> pathlib.Path:
  """Atomically writes out_dir/state_<step>.npz and deletes all but the newest `keep`."""
  out_dir = pathlib.Path(out_dir)
  arrays = {f"params/{n}": a for n, a in transformer_model.flatten_params(params).items()}
  for i, leaf in enumerate(_flat_state(opt_state)):
    arrays[f"opt/{i:05d}"] = leaf
  arrays["step"] = np.asarray(step, np.int64)
  arrays["extra_json"] = np.frombuffer(json.dumps(extra).encode(), np.uint8)
  path = state_path(out_dir, step)
  tmp = out_dir / f".tmp_state_{step:09d}.npz"
  ni.write_npz(tmp, arrays)
  os.replace(tmp, path)
  for old in sorted(out_dir.glob("state_*.npz"))[:-keep]:
    old.unlink()
  return path


def latest_state(out_dir: pathlib.Path) -> pathlib.Path | None:
  """The newest state_<step>.npz in out_dir, or None."""
  states = sorted(pathlib.Path(out_dir).glob("state_*.npz"))
  return states[-1] if states else None


def load_state(path: pathlib.Path, opt_state_template):
  """Returns (params, opt_state, step, extra) saved by save_state."""
  with np.load(path, allow_pickle=False) as z:
    params = transformer_model.unflatten_params(
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


# ----------------------------------------------------------------------------------- the loop

@dataclasses.dataclass
class LoopState:
  """What the loop advances: parameters, optimizer state, step, tokens seen, wall seconds."""
  params: Any
  opt_state: Any
  step: int = 0
  tokens: int = 0
  wall_before: float = 0.0  # wall seconds of earlier (resumed) sessions
  started: float = dataclasses.field(default_factory=time.time)

  def wall(self) -> float:
    return self.wall_before + time.time() - self.started


def run_loop(state: LoopState, *, steps: int, train_step, next_batch: Callable[[int], dict],
             tokens_per_step: int, log_every: int, eval_every: int,
             evaluate: Callable[[LoopState, float], Any], checkpoint: Callable[[LoopState], None],
             save_every_secs: float, max_train_secs: float = 0.0, log=print,
             describe: Callable[[int], str] = lambda step: "",
             on_log: Callable[[int, float, float], None] = lambda step, loss, ce: None) -> str:
  """Trains state up to `steps`; returns why it stopped: 'done', 'signal' or 'time'.

  next_batch(step) gives the (device-placed) batch of update `step`; evaluate(state, train_ce)
  runs every eval_every steps (not at the last: the caller evaluates at the end);
  checkpoint(state) runs every save_every_secs and once before returning. SIGTERM/SIGINT stop
  the loop after the current step. tokens_per_step counts tokens (symbols) of one update.
  Every log_every steps (and at the last) on_log(step, loss, ce nats/token) gets the figures
  that the log line shows; describe(step) adds trainer-specific text to that line.
  """
  stop = {"signal": None}

  def on_signal(signum, frame):
    stop["signal"] = signum
  old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
  last_save = time.time()
  window_t, window_steps, ce = time.time(), 0, float("nan")
  reason = "done"
  try:
    while state.step < steps:
      state.params, state.opt_state, loss, ce_dev, _ = train_step(
          state.params, state.opt_state, next_batch(state.step))
      state.step += 1
      state.tokens += tokens_per_step
      window_steps += 1
      if state.step % log_every == 0 or state.step == steps:
        loss, ce = float(loss), float(ce_dev)
        if not math.isfinite(loss):
          raise FloatingPointError(f"non-finite loss at step {state.step}")
        on_log(state.step, loss, ce)
        tps = window_steps * tokens_per_step / max(time.time() - window_t, 1e-9)
        log(f"step {state.step} loss {loss:.4f} ce {ce:.4f} nats ({ce / LN2:.3f} bits/token) "
            f"{describe(state.step)}tokens/s {tps:.0f} elapsed {state.wall():.0f}s "
            f"ETA {(steps - state.step) * tokens_per_step / max(tps, 1e-9):.0f}s")
        window_t, window_steps = time.time(), 0
      if eval_every and state.step % eval_every == 0 and state.step < steps:
        evaluate(state, ce)
        window_t = time.time()  # keep evaluation time out of tokens/s
      if time.time() - last_save >= save_every_secs:
        checkpoint(state)
        last_save = time.time()
      if stop["signal"] is not None:
        log(f"signal {stop['signal']}: saving at step {state.step} and exiting")
        reason = "signal"
        break
      if max_train_secs and state.wall() >= max_train_secs:
        log(f"max_train_secs reached at step {state.step}")
        reason = "time"
        break
    checkpoint(state)
  finally:
    for s, h in old_handlers.items():
      signal.signal(s, h)
  return reason


# ------------------------------------------------------------------------------------- flags

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


def main_for(train_fn, args, done: Callable[[dict], str]) -> dict:
  """A trainer's entry point: TensorFlow (the input pipelines only) kept off the accelerators,
  timestamped log lines, train_fn(args, log=...) run; `done(summary)` is the last line."""
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")

  def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)
  log(f"devices {jax.devices()}; args {dataclasses.asdict(args)}")
  summary = train_fn(args, log=log)
  log(done(summary))
  return summary
