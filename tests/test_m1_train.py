"""M1 trainer: deterministic data, loss goes down, checkpoints resume exactly, export loads."""
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from neural_compression import symbols as sym
from neural_compression.m1 import model as m1_model
from neural_compression.m1 import numpy_inference as ni
from neural_compression.m1 import train as m1_train

WORDS = ("the people of the united states congress union government year nation war peace "
         "law treasury").split()


def tiny_corpus(num_docs, seed):
  rng = np.random.default_rng(seed)
  return [sym.document_symbols(" ".join(rng.choice(WORDS, size=rng.integers(20, 60))) + ".")
          for _ in range(num_docs)]


TRAIN_DOCS = tiny_corpus(12, 0)
VALID_DOCS = tiny_corpus(2, 1)


def tiny_args(out_dir, **kw):
  base = dict(out_dir=str(out_dir), size="tiny", seq_len=32, batch_size=8, optimizer="adam",
              lr_base=0.1, warmup_steps=10, docs_per_run=4, log_every=1, eval_every=0,
              eval_examples=1, final_eval_examples=1, reset_eval_segments=8,
              save_every_secs=1e9, reset_max_len=8)
  base.update(kw)
  return m1_train.TrainArgs(**base)


def run(args, log=lambda msg: None):
  return m1_train.train(args, TRAIN_DOCS, VALID_DOCS, log=log)


def test_stream_is_a_pure_function_of_the_step():
  kw = dict(seq_len=16, batch_size=8, seed=3, docs_per_run=4, reset_fraction=0.25,
            reset_max_len=5)
  a, b = m1_train.TrainStream(TRAIN_DOCS, **kw), m1_train.TrainStream(TRAIN_DOCS, **kw)
  late = b.batch(40)  # b computes later epochs first
  for key, value in a.batch(40).items():
    np.testing.assert_array_equal(value, late[key])
  batch = a.batch(0)
  assert batch["inputs"].shape == (8, 16)
  # Window rows: inputs are BOS + targets shifted right; PAD targets carry no weight.
  np.testing.assert_array_equal(batch["inputs"][:6, 0], ni.BOS)
  np.testing.assert_array_equal(batch["inputs"][:6, 1:], batch["targets"][:6, :-1])
  np.testing.assert_array_equal(batch["weights"] == 0, batch["targets"] == sym.PAD)
  # Reset rows (the last 2): every segment starts with BOS and has 1..5 symbols.
  for row in range(6, 8):
    seg = batch["segment_ids"][row]
    starts = np.flatnonzero(np.diff(np.concatenate([[-1], seg])))
    np.testing.assert_array_equal(batch["inputs"][row, starts], ni.BOS)
    assert np.all(np.diff(np.append(starts, 16)) <= 5)
  # One epoch of window rows covers the corpus once (every document, with its EOS).
  epoch = a._epoch_windows(0)
  assert (epoch != sym.PAD).sum() == sum(len(d) for d in TRAIN_DOCS)
  assert (epoch == sym.EOS).sum() == len(TRAIN_DOCS)


def test_loss_decreases(tmp_path):
  summary = run(tiny_args(tmp_path, steps=40))
  losses = [loss for _, loss, _ in summary["history"]]
  assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
  assert summary["eval"]["full_bpb"] < 6.0 and summary["eval"]["full_bytes"] > 0


def test_sigterm_saves_and_resume_matches_an_uninterrupted_run(tmp_path):
  full = run(tiny_args(tmp_path / "full", steps=8, final_eval_examples=0))

  def log(msg):  # deliver a real SIGTERM to ourselves after step 5
    if msg.startswith("step 5 "):
      os.kill(os.getpid(), signal.SIGTERM)
  part = run(tiny_args(tmp_path / "part", steps=8, final_eval_examples=0), log=log)
  assert part["step"] == 5
  assert m1_train.latest_state(tmp_path / "part").name == "state_000000005.npz"
  resumed = run(tiny_args(tmp_path / "part", steps=8, final_eval_examples=0, resume=True))
  assert resumed["start_step"] == 5 and resumed["step"] == 8
  assert [h[0] for h in resumed["history"]] == [6, 7, 8]
  np.testing.assert_allclose([h[1] for h in resumed["history"]],
                             [h[1] for h in full["history"][5:]], rtol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves(full["params"]),
                  jax.tree_util.tree_leaves(resumed["params"])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_export_is_a_loadable_numpy_checkpoint(tmp_path):
  summary = run(tiny_args(tmp_path / "run", steps=3, export_dir=str(tmp_path / "export"),
                          command="python -m neural_compression.m1.train --steps 3"))
  model = ni.load_model(tmp_path / "export")
  card = (tmp_path / "export" / "MODEL_CARD.md").read_text()
  assert "--steps 3" in card and "tokens_seen | 768" in card
  flat = m1_model.flatten_params(summary["params"])
  for name, value in model.params.items():
    np.testing.assert_array_equal(value, flat[name])


def test_bad_arguments_are_rejected(tmp_path):
  with pytest.raises(ValueError):
    m1_train.TrainStream(TRAIN_DOCS, seq_len=8, batch_size=4, seed=0, reset_fraction=1.5)
  with pytest.raises(ValueError):
    m1_train.make_optimizer("sgd", 0.1, 0.0)


def test_data_parallel_over_two_devices_matches_one(tmp_path):
  """The CLI on 2 (virtual CPU) devices shards the batch and computes the same losses."""
  # Same settings and shapes as tiny_args, so the in-process run reuses the compiled step.
  flags = ["--size", "tiny", "--seq_len", "32", "--batch_size", "8", "--steps", "3",
           "--optimizer", "adam", "--lr_base", "0.1", "--warmup_steps", "10", "--log_every", "1",
           "--eval_every", "0", "--final_eval_examples", "0", "--reset_eval_segments", "0",
           "--export_exact", "0"]
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-m", "neural_compression.m1.train", "--out_dir",
                        str(tmp_path / "two")] + flags, env=env, capture_output=True, text=True,
                       check=True, timeout=120).stdout
  assert "CpuDevice(id=1)" in out
  two = [float(line.split(" loss ")[1].split()[0]) for line in out.splitlines() if " loss " in line]
  one = m1_train.train(m1_train.parse_args(["--out_dir", str(tmp_path / "one")] + flags),
                       log=lambda msg: None)["history"]
  np.testing.assert_allclose(two, [round(h[1], 4) for h in one], atol=2e-4)
