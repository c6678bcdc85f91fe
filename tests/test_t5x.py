"""Real T5X over our tasks: the README's train, eval, score and sample commands, run as written.

One small job output is made here (EqualInfoAC[b=16, v=65k] with a small random test M1, and
Bytes), then the commands of README.md's "Training M2 with T5X" block run in subprocesses (T5X's
entry points parse absl flags and gin for the whole process) from a directory outside the
repository, with `python` the test's interpreter and tiny sizes appended as `--gin.` overrides
(later bindings win). The runs are shared by the tests of this file (one module fixture) and run
two or four at a time to keep the T5X part of the suite short.
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import re
import shlex
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import seqio_tasks
from neural_compression import methods
from neural_compression import output_layout as layout
from seqio_tasks import data
from seqio_tasks import print_samples
from seqio_tasks import sampling
from seqio_tasks import vocabularies
from tests import pipeline_test_corpus as corpus_gen
from tests.test_seqio_tasks import job_args

REPO = pathlib.Path(__file__).resolve().parent.parent
EQUAL_INFO = "equal_info_ac:b16:v65k"
METHODS = (EQUAL_INFO, "bytes")
M2_LENGTH = 128  # tokens per record (--m2_length) = the tasks' feature length here
STEPS, RESUMED_STEPS = 3, 5
PROMPT_TOKENS, SAMPLE_TOKENS = 32, 96
TINY = ("--gin.network.TransformerConfig.emb_dim=32 --gin.network.TransformerConfig.num_heads=2 "
        "--gin.network.TransformerConfig.num_layers=1 --gin.network.TransformerConfig.head_dim=16 "
        "--gin.network.TransformerConfig.mlp_dim=64 "
        f"--gin.TASK_FEATURE_LENGTHS=\"{{'targets': {M2_LENGTH}}}\"")
# Appended to each README command by the script it runs.
OVERRIDES = {
    # A fixed initialization and data order (T5X's defaults draw new ones each run).
    "t5x.train": (f"{TINY} --gin.BATCH_SIZE=4 --gin.EVAL_BATCH_SIZE=8 --gin.EVAL_STEPS=1 "
                  "--gin.RANDOM_SEED=0 --gin.SHUFFLE_TRAIN_EXAMPLES=False "
                  "--gin.TRAIN_STEPS={steps} --gin.EVAL_PERIOD={steps} "
                  "--gin.CHECKPOINT_PERIOD={steps}"),
    "t5x.eval": f"{TINY} --gin.EVAL_BATCH_SIZE=8",
    "t5x.infer": (f"{TINY} --gin.INFER_BATCH_SIZE=8 --gin.PROMPT_TOKENS={PROMPT_TOKENS} "
                  f"--gin.SAMPLE_TOKENS={SAMPLE_TOKENS}"),
}
README_CHECKPOINT = "checkpoint_200000"


def readme_commands() -> list[str]:
  """The commands of the README's T5X block, continuation lines joined, comments dropped."""
  text = (REPO / "README.md").read_text()
  section = text[text.index("## Training M2 with T5X"):]
  block = next(b for b in re.findall(r"```sh\n(.*?)```", section, re.S) if "t5x.train" in b)
  joined = re.sub(r"\\\n\s*", " ", block)
  return [line.strip() for line in joined.splitlines() if line.startswith("python ")]


def _command(kind: str, task_file: str = "equal_info_ac_b16_v65k.gin",
             steps: int = STEPS) -> str:
  """The README command running `python -m <kind>` (the nth of that kind for infer)."""
  commands = readme_commands()
  if kind == "sample":
    command = next(c for c in commands if "m2_sample.gin" in c)
    script = "t5x.infer"
  elif kind == "score":
    command = next(c for c in commands if "m2_score.gin" in c)
    script = "t5x.infer"
  else:
    command = next(c for c in commands if c.startswith(f"python -m {kind} "))
    script = kind
  command = command.replace("equal_info_ac_b16_v65k.gin", task_file)
  command = command.replace(README_CHECKPOINT, f"checkpoint_{steps}")
  return command + " " + OVERRIDES[script].replace("{steps}", str(steps))


class Runs:
  """The job output, its T5X runs and their logs."""

  def __init__(self, root: pathlib.Path):
    self.root = root
    self.data_dir = root / "run"
    self.m1 = root / "m1"
    self.workdir = root / "elsewhere"  # not the repository: the gin files are package resources
    self.model_dir = {m: root / "m2" / methods.parse_method(m).slug for m in METHODS}
    self.logs: dict[str, pathlib.Path] = {}
    self.results: dict[str, subprocess.CompletedProcess] = {}
    self.seconds: dict[str, float] = {}  # wall time of each command (the test prints them)

  def env(self, method: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(NCC_DATA_DIR=str(self.data_dir), NCC_M1_CHECKPOINT=str(self.m1),
               MODEL_DIR=str(self.model_dir[method]),
               PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""),
               TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu",
               # Compiled once for all runs: the score step of train, eval and infer is the same
               # program, and the resumed run's train step is the first run's.
               JAX_COMPILATION_CACHE_DIR=str(self.root / "jax_cache"))
    return env

  def start(self, name: str, method: str, command: str) -> tuple[str, subprocess.Popen]:
    log = self.root / f"{name}.log"
    self.logs[name] = log
    self.seconds[name] = time.monotonic()
    process = subprocess.Popen(["bash", "-c", command], cwd=self.workdir, env=self.env(method),
                               stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)
    return name, process

  def wait(self, *started: tuple[str, subprocess.Popen]) -> None:
    for name, process in started:
      try:
        stdout, _ = process.communicate(timeout=600)
      except subprocess.TimeoutExpired:
        process.kill()  # a hung T5X run fails its tests instead of hanging the suite
        stdout, _ = process.communicate()
      self.seconds[name] = time.monotonic() - self.seconds[name]
      self.results[name] = subprocess.CompletedProcess(process.args, process.returncode,
                                                       stdout, self.log(name))

  def log(self, name: str) -> str:
    return self.logs[name].read_text()

  def check(self, name: str) -> subprocess.CompletedProcess:
    result = self.results[name]
    assert result.returncode == 0, f"{name} failed:\n{result.stderr[-6000:]}"
    return result


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
  from beam_pipeline import pipeline  # the tests, not seqio_tasks, may use the job
  from tests import m1_test_checkpoints
  started = time.monotonic()
  r = Runs(tmp_path_factory.mktemp("t5x"))
  r.workdir.mkdir()
  m1_test_checkpoints.make_checkpoint(r.m1)
  pattern = corpus_gen.write_c4_shards(r.root / "c4",
                                       corpus_gen.make_documents(16, seed=5, mean_words=80))
  # --m2_mode=split keeps every token: ~50 train and ~13 validation records of 128 tokens each.
  pipeline.run(job_args(pattern, str(r.data_dir), METHODS, f"--m1_checkpoint={r.m1}",
                        "--m2_mode=split"))
  # EqualInfoAC's eval, score and sample start when its training ends, the Bytes resume when
  # the first Bytes run ends.
  train = r.start("train", EQUAL_INFO, _command("t5x.train"))
  train_bytes = r.start("train_bytes", "bytes", _command("t5x.train", "bytes.gin"))
  r.wait(train)
  after_train = [r.start("eval", EQUAL_INFO, _command("t5x.eval")),
                 r.start("score", EQUAL_INFO, _command("score")),
                 r.start("sample", EQUAL_INFO, _command("sample"))]
  r.wait(train_bytes)
  resume = r.start("resume_bytes", "bytes", _command("t5x.train", "bytes.gin", RESUMED_STEPS))
  r.wait(*after_train, resume)
  r.seconds["all, with the job output"] = time.monotonic() - started
  return r


def _metrics(path_glob: pathlib.Path) -> list[dict]:
  paths = sorted(path_glob.parent.glob(path_glob.name))
  assert paths, f"no {path_glob}"
  return [json.loads(line) for p in paths for line in p.read_text().splitlines() if line]


def validation_records(r: Runs, method: str) -> dict[tuple[str, int], dict]:
  """(example_id, chunk) -> {'targets' raw tokens, 'raw_bytes'} read from the TFRecords."""
  slug = methods.parse_method(method).slug
  files = sorted(tf.io.gfile.glob(layout.file_pattern(str(r.data_dir), slug, "validation")))
  out = {}
  for raw in tf.data.TFRecordDataset(files).as_numpy_iterator():
    ex = tf.train.Example.FromString(raw).features.feature
    key = (ex[layout.EXAMPLE_ID].bytes_list.value[0].decode(),
           int(ex[layout.CHUNK].int64_list.value[0]))
    assert key not in out
    out[key] = {"targets": np.asarray(ex[layout.TARGETS].int64_list.value, np.int64),
                "raw_bytes": int(ex[layout.RAW_BYTES].int64_list.value[0])}
  return out


def test_readme_block_has_the_four_t5x_commands():
  commands = readme_commands()
  assert [c.split()[2] for c in commands] == ["t5x.train", "t5x.eval", "t5x.infer", "t5x.infer",
                                              "seqio_tasks.print_samples"]
  for command in commands[:4]:
    assert "--gin_search_paths" not in command  # not needed: the gin files are resources
    assert "seqio_tasks/gin/models/m2_403m.gin" in command


def test_train_eval_and_scores_agree_on_bits_per_byte(runs):
  runs.check("train")
  runs.check("eval")
  runs.check("score")
  train = _metrics(runs.model_dir[EQUAL_INFO] / "inference_eval" / "*-metrics.jsonl")
  evaluated = _metrics(runs.model_dir[EQUAL_INFO] / "eval" / "inference_eval" /
                       "*-metrics.jsonl")
  assert [m["step"] for m in train] == [STEPS] and [m["step"] for m in evaluated] == [STEPS]
  # From the scores and the records' own raw_bytes (read from the TFRecords, not from T5X).
  records = validation_records(runs, EQUAL_INFO)
  scores = _metrics(runs.model_dir[EQUAL_INFO] / "score" / "*-score.jsonl-*-of-?????")
  keys = [(s["inputs"]["example_id"], int(s["inputs"]["chunk"])) for s in scores]
  assert sorted(keys) == sorted(records), "every validation record is scored once"
  assert all(s["inputs"]["raw_bytes"] == records[k]["raw_bytes"] for s, k in zip(scores, keys))
  total_nats = sum(s["score"] for s in scores)
  total_bytes = sum(rec["raw_bytes"] for rec in records.values())
  from_scores = -total_nats / math.log(2) / total_bytes
  assert train[0]["raw_bytes"] == evaluated[0]["raw_bytes"] == total_bytes
  assert train[0]["bits_per_byte"] == pytest.approx(from_scores, rel=1e-6)
  assert evaluated[0]["bits_per_byte"] == pytest.approx(from_scores, rel=1e-6)
  assert seqio_tasks.metrics.bits_per_byte(
      [rec["raw_bytes"] for rec in records.values()],
      [s["score"] for s in scores])["bits_per_byte"] == pytest.approx(from_scores, rel=1e-12)
  # A 3-step model is near the uniform rate: 16 bits per token, so (tokens / bytes) * 16.
  tokens = sum(len(rec["targets"]) for rec in records.values())
  assert 0.9 < from_scores / (16 * tokens / total_bytes) < 1.05
  print("\nT5X commands, wall seconds: " +
        ", ".join(f"{name} {seconds:.0f}" for name, seconds in runs.seconds.items()))
  print(f"bits/byte after {STEPS} steps: train {train[0]['bits_per_byte']:.6f}, eval "
        f"{evaluated[0]['bits_per_byte']:.6f}, from scores {from_scores:.6f}, uniform "
        f"{16 * tokens / total_bytes:.6f}")


def test_bytes_trains_and_a_second_run_continues_from_the_checkpoint(runs):
  runs.check("train_bytes")
  runs.check("resume_bytes")
  model_dir = runs.model_dir["bytes"]
  assert (model_dir / f"checkpoint_{STEPS}").is_dir()
  assert (model_dir / f"checkpoint_{RESUMED_STEPS}").is_dir()
  first, second = runs.log("train_bytes"), runs.log("resume_bytes")
  assert "Initializing parameters from scratch" in first
  assert f"Starting main loop over steps 0-{STEPS}" in first
  # The second run restores the last checkpoint and trains only the remaining steps.
  assert "Initializing parameters from scratch" not in second
  assert re.search(rf"Restoring (?:from )?checkpoint.*checkpoint_{STEPS}\b", second), \
      second[-3000:]
  assert f"Starting main loop over steps {STEPS}-{RESUMED_STEPS}" in second
  metrics = _metrics(model_dir / "inference_eval" / "*-metrics.jsonl")
  assert [m["step"] for m in metrics] == [STEPS, RESUMED_STEPS]
  assert all(m["bits_per_byte"] > 0 for m in metrics)


def test_samples_decode_through_the_vocabulary(runs, monkeypatch, capsys):
  runs.check("sample")
  records = validation_records(runs, EQUAL_INFO)
  lines = _metrics(runs.model_dir[EQUAL_INFO] / "samples" / "*-predict.jsonl-*-of-?????")
  prompted = [k for k, rec in records.items() if len(rec["targets"]) > PROMPT_TOKENS]
  assert len(lines) == len(prompted) > 0
  monkeypatch.setenv(data.M1_CHECKPOINT_ENV, str(runs.m1))
  vocab = vocabularies.M1ArithmeticVocabulary(EQUAL_INFO, data_dir=str(runs.data_dir))
  decoded = 0
  for line in lines:
    fields = line["inputs"]
    record = records[(fields["example_id"], int(fields["chunk"]))]
    # The prompt is the record's first tokens, as model ids.
    np.testing.assert_array_equal(np.asarray(fields["inputs"]) - vocabularies.ID_OFFSET,
                                  record["targets"][:PROMPT_TOKENS])
    tokens = line["prediction_tokens"]
    assert 0 < len(tokens) <= SAMPLE_TOKENS
    sample = sampling.decode_sample(vocab, fields["inputs"], tokens)
    # b=16 and 16-bit tokens: each token is a window, so T5X's decode of the sample alone
    # (its `prediction`) is the continuation of prompt + sample decoded as one stream.
    if sample.decodes:
      assert line["prediction"] == sample.text
    assert sample.prompt_text == vocabularies.symbols_to_text(
        vocab.decode_symbols(fields["inputs"], strict=True))
    decoded += sample.decodes
  # The README's print_samples command, its arguments as the shell passes them, in-process.
  command = next(c for c in readme_commands() if "print_samples" in c)
  argv = shlex.split(command.replace("$MODEL_DIR", str(runs.model_dir[EQUAL_INFO])))[3:]
  monkeypatch.setenv(data.DATA_DIR_ENV, str(runs.data_dir))
  assert print_samples.main(argv) == 0
  printed = capsys.readouterr()
  out = [json.loads(line) for line in printed.out.splitlines()]
  assert len(out) == len(lines)
  assert sum(o["decodes"] for o in out) == decoded
  assert f"{decoded} of {len(lines)} samples decode" in printed.err
  print(f"\n{decoded} of {len(lines)} samples decode")
