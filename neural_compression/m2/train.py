"""Trains a small decoder-only M2 on one SeqIO task: python -m neural_compression.m2.train.

The project's own trainer for M2 at small scale (CPU here, any JAX devices elsewhere), on the
code M1 uses too (neural_compression.transformer: model, loop, optimizer, rsqrt schedule,
z-loss, checkpoints), fed the way T5X feeds a decoder-only model:

  seqio.get_mixture_or_task(--task).get_dataset({'targets': --seq_len}, 'train', shuffle, seed)
  -> seqio.DecoderFeatureConverter(pack=False): decoder_input_tokens (targets shifted right, 0
     first), decoder_target_tokens, decoder_loss_weights (0 at padding)
  -> batches of --batch_size rows.

The batch order is a pure function of (--seed, step): --resume restarts the dataset and skips the
steps already taken, so a resumed run sees the batches an uninterrupted one would.

Validation (every --eval_every steps and at the end): bits/byte over --eval_records validation
records spread evenly over the split (-1: all) = sum over target tokens of -log2 p(token) / sum
of the records' raw_bytes (the paper's bits/byte: tokens/byte * loss per token / ln 2). The
uniform rate log2(vocab) * tokens / bytes over the same records is logged beside it.

Compute (logged per evaluation, the paper's conventions): M2 training FLOPs = 6 * non-embedding
parameters * tokens seen; for methods that run M1, its inference cost 2 * M1 non-embedding
parameters * bytes seen is added in total_flops, with M1's size read from the checkpoint that
compressed the run (--m1_checkpoint, default the one the SeqIO vocabularies decode with: checked
against the run's m1_checksum).

SeqIO, TensorFlow and the tasks (seqio_tasks) are imported when training starts, not when this
module is imported: the core package imports neither at import time.

Outputs in --out_dir: state_<step>.npz (resume), metrics.jsonl (one JSON object per evaluation),
summary.json (the final figures and the command).
"""
from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from neural_compression import methods
from neural_compression.m1 import config as model_config
from neural_compression.transformer import model as transformer
from neural_compression.transformer import numpy_inference as ni
from neural_compression.transformer import training

LN2 = math.log(2.0)
PROGRAM = "python -m neural_compression.m2.train"


def _seqio():
  """seqio and the project's task registry, imported when a training needs them."""
  import seqio
  from seqio_tasks import data as task_data
  from seqio_tasks import tasks  # noqa: F401 (registers the c4_* tasks)
  return seqio, task_data


@dataclasses.dataclass
class M2Args:
  task: str
  out_dir: str
  data_dir: str = ""  # the pipeline run to read ('' = seqio_tasks.data's default resolution)
  size: str = "tiny"
  seq_len: int = 512
  batch_size: int = 8
  steps: int = 300
  optimizer: str = "adam"
  lr_base: float = 0.03
  warmup_steps: int = 100
  z_loss: float = 1e-4
  grad_clip: float = 1.0
  seed: int = 0
  log_every: int = 10
  eval_every: int = 50
  eval_records: int = 128
  final_eval_records: int = -1
  save_every_secs: float = 300.0
  keep: int = 2
  resume: bool = False
  m1_checkpoint: str = ""  # the M1 that compressed the run ('' = the vocabularies' default)
  command: str = ""


# The M2 sizes: the paper's (25m ... 2b, as for M1) and small ones for CPU runs.
M2_SIZES: dict[str, model_config.TransformerConfig] = {
    name: model_config.TransformerConfig(**{**cfg.to_dict(), "vocab_size": 1})
    for name, cfg in model_config.SIZES.items()
}
M2_SIZES["cpu400k"] = model_config.TransformerConfig(
    num_layers=2, d_model=128, num_heads=2, head_dim=64, mlp_dim=512, vocab_size=1)


def m2_config(size: str, vocab_size: int) -> model_config.TransformerConfig:
  """The named M2 size over a task's vocabulary (tokens, special ids included)."""
  if size not in M2_SIZES:
    raise ValueError(f"unknown M2 size {size!r}; known: {sorted(M2_SIZES)}")
  return M2_SIZES[size].with_vocab(vocab_size)


def _method_of_task(task) -> methods.MethodSpec:
  return task.source.spec


def train_batches(task, seq_len: int, batch_size: int, seed: int, start_step: int):
  """Endless numpy batches {inputs, targets, segment_ids, weights} from step start_step on."""
  seqio, _ = _seqio()
  ds = task.get_dataset({"targets": seq_len}, split="train", shuffle=True, seed=seed,
                        num_epochs=None, use_cached=False)
  ds = seqio.DecoderFeatureConverter(pack=False)(ds, {"targets": seq_len})
  ds = ds.batch(batch_size, drop_remainder=True).skip(start_step)
  for b in ds.as_numpy_iterator():
    inputs = b["decoder_input_tokens"].astype(np.int32)
    yield {"inputs": inputs, "targets": b["decoder_target_tokens"].astype(np.int32),
           "segment_ids": np.zeros_like(inputs),
           "weights": b["decoder_loss_weights"].astype(np.float32)}


class ValidationSet:
  """Validation records of a task, as padded arrays, with the raw bytes each covers."""

  def __init__(self, task, seq_len: int):
    ds = task.get_dataset({"targets": seq_len}, split="validation", shuffle=False, num_epochs=1,
                          use_cached=False)
    targets, raw = [], []
    for ex in ds.as_numpy_iterator():
      targets.append(ex["targets"].astype(np.int32))
      raw.append(int(ex["raw_bytes"]))
    if not targets:
      raise ValueError(f"task {task.name}: no validation records")
    self.seq_len = seq_len
    self.targets, self.raw_bytes = targets, np.asarray(raw, np.int64)
    self.vocab_size = task.output_features["targets"].vocabulary.vocab_size

  def chosen(self, count: int) -> np.ndarray:
    """Indices of `count` records spread evenly over the split (-1 or >= size: all)."""
    n = len(self.targets)
    if count < 0 or count >= n:
      return np.arange(n)
    return np.unique(np.linspace(0, n - 1, count).round().astype(int))

  def batches(self, indices: np.ndarray, batch_size: int):
    for s in range(0, len(indices), batch_size):
      idx = indices[s:s + batch_size]
      targets = np.zeros((batch_size, self.seq_len), np.int32)  # full batches: one compile
      for r, i in enumerate(idx):
        targets[r, :len(self.targets[i])] = self.targets[i]
      inputs = np.zeros_like(targets)
      inputs[:, 1:] = targets[:, :-1]
      yield inputs, targets


@jax.jit
def _token_bits(logits, targets):
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nats = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  return jnp.where(targets > 0, nats, 0.0).sum() / LN2


def evaluate(apply_fn, params, valid: ValidationSet, count: int, batch_size: int) -> dict:
  """bits/byte, uniform bits/byte and tokens/bytes over `count` evenly spread records."""
  indices = valid.chosen(count)
  bits = 0.0
  for inputs, targets in valid.batches(indices, batch_size):
    bits += float(_token_bits(apply_fn(params, inputs), targets))
  nbytes = int(valid.raw_bytes[indices].sum())
  ntokens = int(sum(len(valid.targets[i]) for i in indices))
  return {"bits_per_byte": bits / nbytes,
          "uniform_bits_per_byte": math.log2(valid.vocab_size) * ntokens / nbytes,
          "eval_records": int(len(indices)), "eval_bytes": nbytes, "eval_tokens": ntokens}


def m1_non_embedding_params(args: M2Args, data_dir: str) -> int:
  """Non-embedding parameters of the M1 that compressed the run in data_dir (for FLOPs).

  Read from --m1_checkpoint (default: the checkpoint the SeqIO vocabularies decode with), which
  must be the run's (its directory checksum equal to the manifest's m1_checksum).
  """
  _, task_data = _seqio()
  checkpoint = args.m1_checkpoint or task_data.default_m1_checkpoint()
  want = task_data.read_manifest(data_dir).get("m1_checksum")
  if want and task_data.directory_checksum(checkpoint) != want:
    raise ValueError(f"--m1_checkpoint={checkpoint} is not the M1 that compressed {data_dir!r} "
                     f"(manifest m1_checksum {want}); pass that checkpoint")
  config, _, _ = ni.load_checkpoint(checkpoint)
  return config.non_embedding_params()


def train(args: M2Args, log=print) -> dict:
  """Runs (or resumes) one M2 training; returns the summary written to summary.json."""
  seqio, task_data = _seqio()
  if args.data_dir:
    task_data.set_data_dir(args.data_dir)
  task = seqio.get_mixture_or_task(args.task)
  spec = _method_of_task(task)
  vocab_size = task.output_features["targets"].vocabulary.vocab_size
  config = m2_config(args.size, vocab_size)
  out_dir = pathlib.Path(args.out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  valid = ValidationSet(task, args.seq_len)
  train_bytes_per_token = _train_bytes_per_token(spec)
  m1_params = (m1_non_embedding_params(args, task_data.get_data_dir()) if spec.uses_m1 else 0)
  n_params = config.non_embedding_params()

  train_step, opt_init = training.compiled_train_step(
      config, args.optimizer, args.lr_base, args.warmup_steps, args.grad_clip, args.z_loss)
  model = transformer.DecoderTransformer(config)
  apply_fn = jax.jit(lambda p, x: model.apply({"params": p}, x))
  params = transformer.init_params(config, args.seed)
  state = training.LoopState(params, opt_init(params))
  if args.resume and (path := training.latest_state(out_dir)) is not None:
    state.params, state.opt_state, state.step, extra = training.load_state(path, state.opt_state)
    state.wall_before = extra.get("wall_secs", 0.0)
    log(f"resumed from {path} at step {state.step}")
  elif (out_dir / "metrics.jsonl").exists():
    (out_dir / "metrics.jsonl").unlink()  # a fresh run starts a fresh curve
  tokens_per_step = args.batch_size * args.seq_len
  state.tokens = state.step * tokens_per_step
  # Data parallel as M1's trainer: batch rows sharded over every device, parameters replicated.
  parallel = training.DataParallel(args.batch_size)
  if parallel.num_hosts > 1:
    raise ValueError("the M2 trainer feeds one host (use T5X for multi-host M2 training)")
  state.params = parallel.replicate(state.params)
  state.opt_state = parallel.replicate(state.opt_state)

  def checkpoint(s):
    training.save_state(out_dir, s.step, s.params, s.opt_state, args.keep,
                        {"wall_secs": s.wall(), "args": dataclasses.asdict(args)})

  def record_eval(count, train_ce):
    t = time.time()
    figs = evaluate(apply_fn, state.params, valid, count, args.batch_size)
    tokens = state.step * tokens_per_step
    bytes_seen = tokens * train_bytes_per_token
    row = {"step": state.step, "tokens": tokens, "bytes_seen": round(bytes_seen),
           "m2_train_flops": 6.0 * n_params * tokens,
           "total_flops": 6.0 * n_params * tokens + 2.0 * m1_params * bytes_seen,
           "m1_non_embedding_params": m1_params,
           "train_ce_nats": train_ce, "wall_secs": round(state.wall(), 1), **figs}
    with open(out_dir / "metrics.jsonl", "a") as f:
      f.write(json.dumps(row) + "\n")
    log(f"eval step {state.step}: validation {figs['bits_per_byte']:.4f} bits/byte (uniform "
        f"{figs['uniform_bits_per_byte']:.4f}) over {figs['eval_bytes']} bytes "
        f"({time.time() - t:.0f}s)")
    return row

  batches = train_batches(task, args.seq_len, args.batch_size, args.seed, state.step)
  last_ce = {"ce": float("nan")}

  def on_log(step, loss, ce):
    last_ce["ce"] = ce

  reason = training.run_loop(
      state, steps=args.steps, train_step=train_step,
      next_batch=lambda step: parallel.put_batch(next(batches)),
      tokens_per_step=tokens_per_step, log_every=args.log_every, eval_every=args.eval_every,
      evaluate=lambda s, ce: record_eval(args.eval_records, ce), checkpoint=checkpoint,
      save_every_secs=args.save_every_secs, log=log, on_log=on_log)
  last = record_eval(args.final_eval_records, last_ce["ce"]) if reason != "signal" else None
  summary = {"task": args.task, "method": spec.name, "size": args.size,
             "config": config.to_dict(), "non_embedding_params": n_params,
             "m1_non_embedding_params": m1_params,
             "steps": state.step, "tokens_per_step": tokens_per_step,
             "train_bytes_per_token": train_bytes_per_token,
             "bytes_per_step": tokens_per_step * train_bytes_per_token,
             "final": last, "command": args.command}
  if last is not None:
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
  summary["params"] = state.params
  return summary


def _train_bytes_per_token(spec: methods.MethodSpec) -> float:
  """Mean source bytes per train token of the run (manifest stats), for bytes seen and FLOPs."""
  _, task_data = _seqio()
  split = task_data.read_stats(task_data.get_data_dir())[spec.slug]["train"]
  return float(split["m2_raw_bytes"]) / float(split["m2_tokens"])


def parse_args(argv: Sequence[str] | None = None) -> M2Args:
  return training.parse_dataclass_args(M2Args, argv, __doc__.split("\n")[0], PROGRAM)


def main(argv: Sequence[str] | None = None) -> None:
  training.main_for(train, parse_args(argv), lambda s: f"done at step {s['steps']}: {s['final']}")


if __name__ == "__main__":
  main()
