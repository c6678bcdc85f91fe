"""M1 trainer: loss goes down, checkpoints resume exactly mid-epoch, exports carry the exact
model calibrated on the training data and a card that names it, data parallel matches."""
import json
import os
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from neural_compression import symbols as sym
from neural_compression.m1 import data as m1_data
from neural_compression.m1 import train as m1_train
from neural_compression.transformer import model as m1_model
from neural_compression.transformer import numpy_inference as ni
from neural_compression.transformer import training

WORDS = ("the people of the united states congress union government year nation war peace "
         "law treasury").split()


def tiny_corpus(num_docs, seed, description):
  rng = np.random.default_rng(seed)
  docs = [sym.document_symbols(" ".join(rng.choice(WORDS, size=rng.integers(20, 60))) + ".")
          for _ in range(num_docs)]
  return m1_data.InMemoryExamples.from_documents(docs, description, docs_per_run=4)


TRAIN = tiny_corpus(12, 0, "tiny test corpus, train")
VALID = tiny_corpus(2, 1, "tiny test corpus, validation")


def tiny_args(out_dir, **kw):
  base = dict(out_dir=str(out_dir), size="tiny", seq_len=32, batch_size=8, optimizer="adam",
              lr_base=0.1, warmup_steps=10, docs_per_run=4, log_every=1, eval_every=0,
              eval_examples=1, final_eval_examples=1, reset_eval_segments=8,
              save_every_secs=1e9, reset_max_len=8, example_shuffle=4, window_shuffle=16)
  base.update(kw)
  return m1_train.TrainArgs(**base)


def run(args, log=lambda msg: None):
  return m1_train.train(args, TRAIN, VALID, log=log)


def test_loss_decreases(tmp_path):
  summary = run(tiny_args(tmp_path, steps=40))
  losses = [loss for _, loss, _ in summary["history"]]
  assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
  assert summary["eval"]["full_bpb"] < 6.0 and summary["eval"]["full_bytes"] > 0


def test_sigterm_saves_and_resume_mid_epoch_matches_an_uninterrupted_run(tmp_path):
  full = run(tiny_args(tmp_path / "full", steps=8, final_eval_examples=0))

  def log(msg):  # deliver a real SIGTERM to ourselves after step 5 (an epoch is ~16 steps)
    if msg.startswith("step 5 "):
      os.kill(os.getpid(), signal.SIGTERM)
  part = run(tiny_args(tmp_path / "part", steps=8, final_eval_examples=0), log=log)
  assert part["step"] == 5
  assert training.latest_state(tmp_path / "part").name == "state_000000005.npz"
  # A copy without the data position: the trainer replays the first 5 batches instead.
  shutil.copytree(tmp_path / "part", tmp_path / "replay")
  for path in (tmp_path / "replay").glob("data_*"):
    path.unlink()
  logs = []
  resumed = run(tiny_args(tmp_path / "part", steps=8, final_eval_examples=0, resume=True),
                log=logs.append)
  assert any("data position restored" in line for line in logs)
  replayed = run(tiny_args(tmp_path / "replay", steps=8, final_eval_examples=0, resume=True))
  for other in (resumed, replayed):
    assert other["start_step"] == 5 and other["step"] == 8
    assert [h[0] for h in other["history"]] == [6, 7, 8]
    np.testing.assert_allclose([h[1] for h in other["history"]],
                               [h[1] for h in full["history"][5:]], rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(full["params"]),
                    jax.tree_util.tree_leaves(other["params"])):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_export_carries_the_exact_model_calibrated_on_the_training_data(tmp_path):
  summary = run(tiny_args(tmp_path / "run", steps=3, export_dir=str(tmp_path / "export"),
                          command="python -m neural_compression.m1.train --steps 3"))
  model = ni.load_model(tmp_path / "export")
  card = (tmp_path / "export" / "MODEL_CARD.md").read_text()
  assert "--steps 3" in card and "tokens_seen | 768" in card
  # The card names what M1 was trained on (here: the sources passed in), not a fixed corpus.
  assert "| data | tiny test corpus, train" in card
  assert "| validation_data | tiny test corpus, validation |" in card
  assert "sotu" not in card
  flat = m1_model.flatten_params(summary["params"])
  for name, value in model.params.items():
    np.testing.assert_array_equal(value, flat[name])
  # The training length is recorded (the engine's context must not exceed it).
  assert ni.training_context_length(tmp_path / "export") == 32
  exact = json.loads((tmp_path / "export" / "exact_config.json").read_text())
  assert exact["context_length"] == 32
  # No --data_dir: calibrated on the default corpus, and all 64 documents asked for take part
  # (3 rows each; before, calibration stopped after 48 rows = 16 documents).
  assert exact["calibration"]["texts"] == 64 and exact["calibration"]["rows"] == 3 * 64
  assert exact["calibration"]["source"].startswith("default corpus")


def test_bad_arguments_are_rejected(tmp_path):
  with pytest.raises(ValueError):
    training.make_optimizer("sgd", 0.1, 0.0)
  with pytest.raises(ValueError, match="at least one window row"):
    run(tiny_args(tmp_path, reset_fraction=1.0))
  with pytest.raises(ValueError, match="unknown M1 size"):
    run(tiny_args(tmp_path, size="huge"))


def test_data_parallel_over_two_devices_matches_one(tmp_path):
  """The CLI on 2 (virtual CPU) devices shards the batch and computes the same losses."""
  # Same settings and shapes as tiny_args, so the in-process run reuses the compiled step; the
  # data is a small bytes run of the job (the embedded corpus would make this test slow).
  from tests.test_m1_data import make_bytes_run
  bytes_run, _, _ = make_bytes_run()
  flags = ["--data_dir", bytes_run, "--size", "tiny", "--seq_len", "32", "--batch_size", "8", "--steps", "3",
           "--optimizer", "adam", "--lr_base", "0.1", "--warmup_steps", "10", "--log_every", "1",
           "--eval_every", "0", "--final_eval_examples", "0", "--reset_eval_segments", "0",
           "--export_exact", "0", "--validation_examples", "1"]
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-m", "neural_compression.m1.train", "--out_dir",
                        str(tmp_path / "two")] + flags, env=env, capture_output=True, text=True,
                       check=True, timeout=600).stdout
  assert "CpuDevice(id=1)" in out
  two = [float(line.split(" loss ")[1].split()[0]) for line in out.splitlines() if " loss " in line]
  one = m1_train.train(m1_train.parse_args(["--out_dir", str(tmp_path / "one")] + flags),
                       log=lambda msg: None)["history"]
  np.testing.assert_allclose(two, [round(h[1], 4) for h in one], atol=2e-4)


def test_microbatches_compute_the_same_update(tmp_path):
  """--microbatches splits the batch's rows for memory; the losses and weights stay the same."""
  one = run(tiny_args(tmp_path / "one", steps=3, final_eval_examples=0))
  four = run(tiny_args(tmp_path / "four", steps=3, final_eval_examples=0, microbatches=4))
  np.testing.assert_allclose([h[1] for h in four["history"]], [h[1] for h in one["history"]],
                             rtol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves(one["params"]),
                  jax.tree_util.tree_leaves(four["params"])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
