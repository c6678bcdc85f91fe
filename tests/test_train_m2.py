"""The M2 trainer (neural_compression.m2.train) on a tiny real pipeline run, read through SeqIO."""
from __future__ import annotations

import importlib.util
import json
import pathlib

import jax
import matplotlib.image
import numpy as np
import pytest
import seqio

from neural_compression.m2 import train as train_m2
from tests.test_seqio_tasks import M2_LENGTH

TASK = "c4_bytes"


def _args(out_dir, **overrides) -> train_m2.M2Args:
  base = dict(task=TASK, out_dir=str(out_dir), size="tiny", seq_len=M2_LENGTH, batch_size=4,
              steps=40, lr_base=0.05, warmup_steps=10, log_every=10, eval_every=20,
              eval_records=8, final_eval_records=-1)
  base.update(overrides)
  return train_m2.M2Args(**base)


def _leaves(params):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(params)]


def _report_module():
  path = pathlib.Path(__file__).resolve().parent.parent / "experiments" / "m2_report.py"
  spec = importlib.util.spec_from_file_location("m2_report", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_loss_goes_down_and_validation_beats_uniform(run_dir, tmp_path):
  out_dir = tmp_path / "bytes"
  summary = train_m2.train(_args(out_dir), log=lambda m: None)
  rows = [json.loads(l) for l in (out_dir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [20, 40]
  final = summary["final"]
  # Untrained, a bytes model pays log2(259) ~ 8.02 bits/byte; 40 steps must learn the unigram.
  assert final["bits_per_byte"] < 0.8 * final["uniform_bits_per_byte"]
  assert rows[-1]["train_ce_nats"] < rows[0]["train_ce_nats"] or (
      final["bits_per_byte"] < rows[0]["bits_per_byte"])
  written = json.loads((out_dir / "summary.json").read_text())
  assert written["final"] == final and written["steps"] == 40
  # Bytes: one token per byte, and the run's stats agree with the records read through SeqIO.
  assert final["eval_tokens"] == final["eval_bytes"]
  assert written["train_bytes_per_token"] == pytest.approx(1.0)
  assert final["m2_train_flops"] == 6 * written["non_embedding_params"] * 40 * 4 * M2_LENGTH

  # The report script reads these files: table row and both plots.
  report = _report_module()
  runs = report.load_runs(tmp_path)
  table = report.markdown_table(runs)
  assert "| Bytes | 1.00 |" in table and f"{final['bits_per_byte']:.3f}" in table
  for plot in (report.plot_curves, report.plot_bytes_per_step):
    png = tmp_path / f"{plot.__name__}.png"
    plot(runs, png)
    height, width, _ = matplotlib.image.imread(png).shape
    assert width > 600 and height > 400


def test_resume_continues_from_saved_step_with_the_same_batches(run_dir, tmp_path):
  whole = train_m2.train(_args(tmp_path / "whole", steps=12, eval_every=0), log=lambda m: None)
  train_m2.train(_args(tmp_path / "parts", steps=5, eval_every=0), log=lambda m: None)
  logs = []
  resumed = train_m2.train(_args(tmp_path / "parts", steps=12, eval_every=0, resume=True),
                           log=logs.append)
  assert any("at step 5" in m for m in logs)
  assert resumed["steps"] == 12
  for a, b in zip(_leaves(whole["params"]), _leaves(resumed["params"])):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


def test_untrained_uniform_model_scores_exactly_the_uniform_rate(run_dir):
  task = seqio.get_mixture_or_task("c4_gzip_v256")
  valid = train_m2.ValidationSet(task, M2_LENGTH)
  vocab = task.output_features["targets"].vocabulary.vocab_size

  def uniform_logits(params, inputs):
    return np.zeros(inputs.shape + (vocab,), np.float32)
  figs = train_m2.evaluate(uniform_logits, None, valid, -1, 4)
  assert figs["eval_records"] == len(valid.targets)
  assert figs["eval_bytes"] == int(valid.raw_bytes.sum())
  assert figs["bits_per_byte"] == pytest.approx(figs["uniform_bits_per_byte"], rel=1e-5)
  # gzip compresses: fewer than 8 bits per source byte even for a uniform model over its tokens.
  assert figs["uniform_bits_per_byte"] < 8.0


def test_sizes():
  config = train_m2.m2_config("cpu400k", 65539)
  assert config.vocab_size == 65539 and config.num_layers == 2
  assert train_m2.m2_config("25m", 259).non_embedding_params() > 18_000_000
  with pytest.raises(ValueError, match="unknown M2 size"):
    train_m2.m2_config("huge", 259)


def test_m1_flops_use_the_size_of_the_m1_that_compressed_the_run(tmp_path):
  """M1's inference FLOPs come from the run's own checkpoint, not a fixed size "1m"."""
  from seqio_tasks import data as task_data
  from tests import m1_test_checkpoints
  small = m1_test_checkpoints.make_checkpoint(tmp_path / "small_m1")
  run = tmp_path / "run"
  run.mkdir()
  from neural_compression import run_manifest
  (run / "manifest.json").write_text(json.dumps(
      {"format": run_manifest.FORMAT, "version": run_manifest.VERSION, "files": [],
       "run_files": [], "flags": {}, "methods": [], "records": {},
       "m1_checksum": task_data.directory_checksum(str(small))}))
  args = _args(tmp_path / "out", m1_checkpoint=str(small))
  assert train_m2.m1_non_embedding_params(args, str(run)) == (
      m1_test_checkpoints.SMALL.non_embedding_params())
  shipped = str(pathlib.Path(__file__).resolve().parent.parent / "m1_checkpoint")
  with pytest.raises(ValueError, match="is not the M1 that compressed"):
    train_m2.m1_non_embedding_params(_args(tmp_path / "out", m1_checkpoint=shipped), str(run))
