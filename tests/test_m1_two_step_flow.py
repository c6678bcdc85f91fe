"""The two-step flow, small: the job with --methods=bytes, M1 trained on its output for a few
steps and exported, the job again with that M1, and verify decoding every record to its source.

The long version (a few hundred steps on the default corpus) is the README's documented command
("Training your own M1").
"""
from __future__ import annotations

import json
import pathlib

from beam_pipeline import pipeline
from beam_pipeline import verify
from neural_compression.m1 import train as m1_train
from neural_compression.transformer import numpy_inference as ni
from tests.test_m1_data import make_bytes_run
from tests.test_seqio_tasks import job_args


def test_bytes_job_then_m1_then_job_with_that_m1_then_verify(tmp_path):
  bytes_run, _, pattern = make_bytes_run()
  export = tmp_path / "my_m1"
  args = m1_train.parse_args([
      f"--data_dir={bytes_run}", f"--out_dir={tmp_path / 'train'}", "--size=tiny",
      "--seq_len=64", "--batch_size=8", "--steps=4", "--optimizer=adam", "--lr_base=0.05",
      "--warmup_steps=2", "--log_every=2", "--eval_every=0", "--final_eval_examples=2",
      "--reset_eval_segments=8", "--calibration_documents=4", f"--export_dir={export}"])
  summary = m1_train.train(args, log=lambda msg: None)
  assert summary["step"] == 4 and summary["eval"]["full_bytes"] > 0
  # The export says what it was trained on and calibrated with: this run, not the embedded corpus.
  card = (export / "MODEL_CARD.md").read_text()
  assert f"job output {bytes_run} (bytes/train" in card and "sotu" not in card
  exact = json.loads((export / "exact_config.json").read_text())
  assert exact["calibration"]["source"].startswith(f"job output {bytes_run}")
  assert exact["calibration"]["texts"] == 4
  assert ni.training_context_length(export) == 64

  second = tmp_path / "with_my_m1"
  manifest = pipeline.run(job_args(pattern, str(second), ["equal_info_ac:b16:v65k"],
                                   f"--m1_checkpoint={export}"))
  assert manifest["m1_checksum"] == pipeline.directory_checksum(str(export))
  assert manifest["m1_context"] == 64  # the window it was trained on is the one it encodes with
  result = verify.run([f"--output_dir={second}"])  # the run records its M1
  assert result["mismatches"] == []
  counters = result["counters"]
  assert counters["equal_info_ac_b16_v65k/verified_records"] > 0, counters
  assert not any(v for k, v in counters.items() if "missing" in k or "mismatched" in k), counters
  assert pathlib.Path(second, "equal_info_ac_b16_v65k", "train").is_dir()
