"""Output safety and readers: no run, flag or damaged file may delete user data or hand a reader
wrong records (beam_pipeline/output_dir.py, neural_compression/run_manifest.py, the readers in
seqio_tasks/data.py and beam_pipeline/verify.py).

Every case ends in correct output or one clear error; each checks that nothing else was touched.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys

import pytest

from beam_pipeline import __main__ as job_main
from beam_pipeline import output_dir as output_dir_lib
from beam_pipeline import pipeline
from beam_pipeline import verify
from neural_compression import output_layout as layout
from neural_compression import run_manifest as rm
from tests import pipeline_test_corpus as corpus_gen

METHODS = "static_ac:v256,gzip:v256,bytes"
REPO = pathlib.Path(__file__).resolve().parent.parent


def job_args(pattern, out, *extra, methods=METHODS):
  return ["--source=c4_json", f"--input={pattern}", f"--output_dir={out}", f"--methods={methods}",
          "--docs_per_run=4", "--example_bytes=1024", "--examples_per_run=0", "--num_shards=2",
          "--validation_percent=30", "--m2_length=64", "--batch_size=4", *extra]


def snapshot(directory: pathlib.Path) -> dict:
  """path -> sha256 of every file below `directory` (hidden ones included)."""
  return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(directory.rglob("*")) if p.is_file()}


def run_main(argv, capsys, entry=None) -> tuple[int, str]:
  """`python -m beam_pipeline ARGV` (or `entry`, e.g. verify.main) in-process: (exit code,
  stderr)."""
  import logging
  root = logging.getLogger()
  handlers, level = list(root.handlers), root.level
  capsys.readouterr()  # only what this call prints counts
  try:  # main() points logging at this test's captured stderr: undo that afterwards
    root.handlers[:] = []  # (and none of an earlier test's, whose stream may be closed)
    rc = (entry or job_main.main)(list(argv))
  finally:
    root.handlers[:] = handlers
    root.setLevel(level)
  return rc, capsys.readouterr().err


def assert_one_clear_error(rc, err, match):
  assert rc == 2, err
  assert "Traceback" not in err, err
  lines = [line for line in err.splitlines() if line.startswith("error: ")]
  assert len(lines) == 1 and match in lines[0], err


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  docs = corpus_gen.make_documents(16, seed=31, mean_words=80)
  return corpus_gen.write_c4_shards(tmp_path_factory.mktemp("c4"), docs), docs


@pytest.fixture(scope="module")
def good_run(corpus, tmp_path_factory):
  """A complete run (never modified: tests copy it)."""
  pattern, _ = corpus
  out = tmp_path_factory.mktemp("good") / "run"
  pipeline.run(job_args(pattern, out))
  return out


@pytest.fixture
def run_copy(good_run, tmp_path):
  copy = tmp_path / "run"
  shutil.copytree(good_run, copy)
  return copy


# --------------------------------------------------------------------------------------------
# 1. A wrong --output_dir never deletes user files.

def test_wrong_output_dir_keeps_user_files(corpus, tmp_path, capsys):
  user = tmp_path / "user"
  (user / "bytes").mkdir(parents=True)
  (user / "bytes" / "photo.jpg").write_bytes(b"p")
  (user / "stats.json").write_text("s")
  before = snapshot(user)
  rc, err = run_main(["--methods=bytes", f"--output_dir={user}"], capsys)
  assert_one_clear_error(rc, err, "bytes/photo.jpg")
  assert "stats.json" in err
  assert snapshot(user) == before


def test_output_dir_that_holds_the_input_is_refused(tmp_path, capsys):
  """Adversarial: --output_dir pointed at the corpus itself."""
  docs = corpus_gen.make_documents(4, seed=1, mean_words=30)
  pattern = corpus_gen.write_c4_shards(tmp_path / "c4", docs)
  before = snapshot(tmp_path / "c4")
  rc, err = run_main(job_args(pattern, tmp_path / "c4"), capsys)
  assert_one_clear_error(rc, err, "c4-train.00000-of-00002.json.gz")
  assert snapshot(tmp_path / "c4") == before


def test_file_a_run_did_not_record_is_refused_even_with_overwrite(corpus, run_copy, capsys):
  pattern, _ = corpus
  (run_copy / "bytes" / "train" / "notes.txt").write_text("mine")
  before = snapshot(run_copy)
  rc, err = run_main(job_args(pattern, run_copy, "--overwrite", "--num_shards=3"), capsys)
  assert_one_clear_error(rc, err, "bytes/train/notes.txt")
  assert snapshot(run_copy) == before


def test_symlinked_directory_in_output_dir_is_refused(corpus, run_copy, tmp_path, capsys):
  """Adversarial: a method directory replaced by a link to the user's photos."""
  pattern, _ = corpus
  photos = tmp_path / "photos"
  photos.mkdir()
  (photos / "data-00000-of-00002.tfrecord").write_bytes(b"holiday")
  shutil.rmtree(run_copy / "gzip_v256")
  (run_copy / "gzip_v256").symlink_to(photos, target_is_directory=True)
  rc, err = run_main(job_args(pattern, run_copy), capsys)
  assert_one_clear_error(rc, err, "gzip_v256")
  assert (photos / "data-00000-of-00002.tfrecord").read_bytes() == b"holiday"


def test_manifest_listing_a_path_outside_the_directory_is_refused(corpus, run_copy, tmp_path,
                                                                  capsys):
  """Adversarial: a tampered manifest must not make the job delete ../victim.txt."""
  pattern, _ = corpus
  victim = run_copy.parent / "victim.txt"
  victim.write_text("keep me")
  manifest = json.loads((run_copy / layout.MANIFEST).read_text())
  manifest["files"].append({"path": "../victim.txt", "method": "bytes", "split": "train",
                            "records": 0, "bytes": 7, "sha256": "0" * 64})
  (run_copy / layout.MANIFEST).write_text(json.dumps(manifest))
  rc, err = run_main(job_args(pattern, run_copy, "--overwrite"), capsys)
  assert_one_clear_error(rc, err, "../victim.txt")
  assert victim.read_text() == "keep me"


def test_unmarked_staging_directory_is_not_ours(corpus, run_copy, capsys):
  pattern, _ = corpus
  (run_copy / ".staging-mine").mkdir()
  (run_copy / ".staging-mine" / "thesis.tex").write_text("chapter 1")
  rc, err = run_main(job_args(pattern, run_copy), capsys)
  assert_one_clear_error(rc, err, ".staging-mine/thesis.tex")
  assert (run_copy / ".staging-mine" / "thesis.tex").read_text() == "chapter 1"


# --------------------------------------------------------------------------------------------
# 2. A failed re-run leaves the previous complete run readable and untouched.

def test_rerun_with_a_glob_that_no_longer_matches_keeps_the_old_run(run_copy, tmp_path, capsys):
  before = snapshot(run_copy)
  rc, err = run_main(job_args(str(tmp_path / "gone" / "*.json.gz"), run_copy, "--overwrite"),
                     capsys)
  assert_one_clear_error(rc, err, "no files match")
  assert snapshot(run_copy) == before


def test_run_failing_inside_the_pipeline_keeps_the_old_run(corpus, run_copy, monkeypatch):
  pattern, _ = corpus
  before = snapshot(run_copy)
  from beam_pipeline import compress

  def broken(*args, **kwargs):
    raise RuntimeError("worker lost its disk")

  monkeypatch.setattr(compress.CompressionHandler, "encode_batch", staticmethod(broken))
  with pytest.raises(Exception, match="worker lost its disk"):
    pipeline.run(job_args(pattern, run_copy))
  assert snapshot(run_copy) == before  # no staging dir, no lock left either


def test_run_whose_accounting_fails_is_not_switched_in(corpus, run_copy, monkeypatch):
  pattern, _ = corpus
  before = snapshot(run_copy)
  real = pipeline.accounting
  monkeypatch.setattr(pipeline, "accounting", lambda counters, stats: {
      **real(counters, stats), "injected": {"lhs": 1, "rhs": 2, "ok": False}})
  with pytest.raises(pipeline.AccountingError, match="untouched"):
    pipeline.run(job_args(pattern, run_copy))
  assert snapshot(run_copy) == before


def test_job_killed_during_the_switch_is_finished_by_the_next_job(corpus, good_run, run_copy,
                                                                  monkeypatch):
  """Adversarial: the process dies after moving some files; no reader sees a mixed run, and the
  next job completes the switch to exactly the run that was staged."""
  pattern, _ = corpus
  from apache_beam.io.filesystems import FileSystems
  real_rename = FileSystems.rename
  calls = []

  def dying_rename(src, dst):
    calls.append(src)
    if len(calls) == 3:
      raise KeyboardInterrupt("killed")
    return real_rename(src, dst)

  monkeypatch.setattr(FileSystems, "rename", staticmethod(dying_rename))
  with pytest.raises(KeyboardInterrupt):
    # --num_shards=3: a different run, so the switch must replace every file.
    pipeline.run(job_args(pattern, run_copy, "--num_shards=3", "--overwrite"))
  monkeypatch.setattr(FileSystems, "rename", staticmethod(real_rename))
  assert (run_copy / rm.SWITCH_JOURNAL).exists()
  assert not (run_copy / layout.MANIFEST).exists()  # readers: "no complete run", never a mix
  import seqio_tasks
  with pytest.raises(seqio_tasks.MissingDataError):
    seqio_tasks.data.read_manifest(str(run_copy))
  # The interrupted job's staging must survive its own cleanup: it is the complete new run.
  assert list(run_copy.glob(".staging-*/manifest.json"))
  state = output_dir_lib.inspect_finishing_switch(str(run_copy))
  assert not state.foreign and not (run_copy / rm.SWITCH_JOURNAL).exists()
  reference = run_copy.parent / "reference"
  pipeline.run(job_args(pattern, reference, "--num_shards=3"))
  assert {k: v for k, v in snapshot(run_copy).items() if k.endswith(".tfrecord")} == {
      k: v for k, v in snapshot(reference).items() if k.endswith(".tfrecord")}
  assert seqio_tasks.data.verify_run(str(run_copy)) == []


def test_stale_staging_of_a_crashed_run_is_cleaned(corpus, run_copy):
  pattern, _ = corpus
  staging = run_copy / ".staging-19990101T000000Z-deadbeef"
  staging.mkdir()
  (staging / rm.IN_PROGRESS).write_text("{}")
  (staging / "bytes").mkdir()
  (staging / "bytes" / "half.tfrecord").write_bytes(b"x")
  pipeline.run(job_args(pattern, run_copy))
  assert not staging.exists()


# --------------------------------------------------------------------------------------------
# 3. Readers verify what they read.

def _shard(run: pathlib.Path, slug: str, split: str = "train") -> pathlib.Path:
  return sorted((run / slug / split).glob("data-*.tfrecord"))[0]


def _truncate_at_record_boundary(path: pathlib.Path) -> None:
  data = path.read_bytes()
  import struct
  (length,) = struct.unpack("<Q", data[:8])
  path.write_bytes(data[:12 + length + 4])  # the first record only


@pytest.mark.parametrize("damage", ["truncated_at_record_boundary", "emptied",
                                    "other_methods_shard", "extra_shard", "missing_shard"])
def test_seqio_data_source_refuses_damaged_shards_naming_the_file(run_copy, damage):
  import seqio

  import seqio_tasks
  target = _shard(run_copy, "gzip_v256")
  if damage == "truncated_at_record_boundary":
    target = max((run_copy / "gzip_v256" / "train").glob("data-*"), key=lambda p: p.stat().st_size)
    size = target.stat().st_size
    _truncate_at_record_boundary(target)
    assert 0 < target.stat().st_size < size  # it held two records or more
  elif damage == "emptied":
    target.write_bytes(b"")
  elif damage == "other_methods_shard":
    shutil.copy(_shard(run_copy, "bytes"), target)
  elif damage == "extra_shard":
    target = target.parent / "data-00007-of-00008.tfrecord"
    shutil.copy(_shard(run_copy, "gzip_v256"), target)
  else:
    target.unlink()
  previous = seqio_tasks.set_data_dir(str(run_copy))
  try:
    task = seqio.get_mixture_or_task("c4_gzip_v256")
    with pytest.raises(seqio_tasks.DamagedDataError, match=str(target)):
      task.get_dataset({"targets": 64}, split="train")
    # The other methods of the run still read.
    assert list(seqio.get_mixture_or_task("c4_bytes").get_dataset(
        {"targets": 64}, split="train").as_numpy_iterator())
  finally:
    seqio_tasks.set_data_dir(previous)


def test_same_size_substitution_is_caught_by_the_on_demand_check(run_copy):
  """Adversarial: a shard rewritten in place with the same size passes the cheap check only."""
  import seqio_tasks
  from seqio_tasks import data
  target = _shard(run_copy, "bytes")
  data_ = bytearray(target.read_bytes())
  data_[20] ^= 0xFF
  target.write_bytes(bytes(data_))
  slug_args = (str(run_copy), "bytes", "bytes", "train")
  assert data.list_record_files(*slug_args, checksums=False)  # size matches
  with pytest.raises(seqio_tasks.DamagedDataError, match=f"{target}: sha256"):
    data.list_record_files(*slug_args, checksums=True)
  seqio_tasks.verify_checksums(True)
  try:
    with pytest.raises(seqio_tasks.DamagedDataError, match="sha256"):
      data.list_record_files(*slug_args)
  finally:
    seqio_tasks.verify_checksums(None)
  assert any(str(target) in p for p in seqio_tasks.verify_run(str(run_copy)))


def test_corrupt_manifest_and_stats_are_named_by_readers(run_copy):
  import seqio_tasks
  (run_copy / layout.STATS).write_text((run_copy / layout.STATS).read_text().replace("1", "2"))
  with pytest.raises(seqio_tasks.DamagedDataError, match="stats.json"):
    seqio_tasks.data.read_stats(str(run_copy))
  (run_copy / layout.MANIFEST).write_bytes(b'{"format": "neural_compression.run_ma')
  with pytest.raises(seqio_tasks.DamagedDataError, match="manifest.json is not valid JSON"):
    seqio_tasks.data.read_manifest(str(run_copy))


def test_copied_run_reads_and_verifies_at_its_new_place(good_run, tmp_path):
  """Manifest paths are relative: a run copied elsewhere (or to a bucket) stays valid."""
  import seqio_tasks
  moved = tmp_path / "elsewhere" / "run"
  shutil.copytree(good_run, moved)
  assert seqio_tasks.verify_run(str(moved)) == []
  result = verify.run([f"--output_dir={moved}"])
  assert result["file_problems"] == [] and result["mismatches"] == []
  assert json.loads((moved / rm.VERIFY_REPORT).read_text())["format"] == rm.VERIFY_FORMAT


# --------------------------------------------------------------------------------------------
# 4, 5. Vocabularies and artifacts are keyed by content.

def _two_runs(tmp_path, seed_a=41, seed_b=42):
  runs = []
  for name, seed in (("a", seed_a), ("b", seed_b)):
    docs = corpus_gen.make_documents(12, seed=seed, mean_words=60)
    if name == "b":  # another language entirely: another unigram model
      docs = [{**d, "text": d["text"].upper().replace("A", "ÄÄ")} for d in docs]
    pattern = corpus_gen.write_c4_shards(tmp_path / f"c4_{name}", docs)
    out = tmp_path / f"run_{name}"
    pipeline.run(job_args(pattern, out, methods="static_ac:v256"))
    runs.append((out, docs, pattern))
  return runs


def _records(run: pathlib.Path, slug: str, split: str) -> list[dict]:
  import tensorflow as tf
  files = sorted(str(p) for p in (run / slug / split).glob("data-*.tfrecord"))
  return [verify.parse_record(r.numpy()) for r in tf.data.TFRecordDataset(files)]


def test_vocabulary_decodes_each_run_with_its_own_artifacts(tmp_path):
  import seqio_tasks
  from neural_compression import methods
  from neural_compression.methods import static_unigram
  from seqio_tasks import vocabularies
  (run_a, _, _), (run_b, _, _) = _two_runs(tmp_path)
  ma, mb = (json.loads((r / layout.MANIFEST).read_text()) for r in (run_a, run_b))
  assert ma["static_unigram_sha256"] != mb["static_unigram_sha256"]
  vocab = seqio_tasks.vocabulary_for("static_ac:v256")
  previous = seqio_tasks.set_data_dir(str(run_a))
  try:
    for run, manifest in ((run_a, ma), (run_b, mb), (run_a, ma)):
      seqio_tasks.set_data_dir(str(run))
      # The reference: a compressor built from this run's own artifact file, directly.
      model = static_unigram.StaticUnigramModel.from_json(
          (run / manifest["artifacts"]["static_unigram"]["file"]).read_text())
      reference = methods.build_compressor(methods.parse_method("static_ac:v256"),
                                           unigram_model=model)
      for record in _records(run, "static_ac_v256", "train")[:3]:
        got = vocab.decode_symbols(vocabularies.raw_to_model_ids(record["tokens"]), strict=True)
        assert got.tolist() == reference.decode_prefix(record["tokens"]).tolist()
        assert len(got) == record["raw_bytes"]
  finally:
    seqio_tasks.set_data_dir(previous)


def test_changed_input_text_gets_fresh_artifacts_and_provenance(tmp_path):
  docs = corpus_gen.make_documents(12, seed=43, mean_words=60)
  pattern = corpus_gen.write_c4_shards(tmp_path / "c4", docs)
  out = tmp_path / "run"
  methods = "static_ac:v256,spm:v400"
  first = pipeline.run(job_args(pattern, out, methods=methods))
  changed = [{**d, "text": "zzzz qqqq " * 40} for d in docs]
  corpus_gen.write_c4_shards(tmp_path / "c4", changed)  # same paths, same flags
  second = pipeline.run(job_args(pattern, out, methods=methods))
  for key in ("static_unigram_sha256", "spm_model_sha256"):
    assert first[key] != second[key], key
  for name in ("static_unigram", "spm"):
    before, after = first["artifacts"][name], second["artifacts"][name]
    assert before["estimated_from"]["content_sha256"] != after["estimated_from"]["content_sha256"]
    assert after["estimated_from"]["documents"] > 0 and after["sha256"] == second[
        f"{'static_unigram' if name == 'static_unigram' else 'spm_model'}_sha256"]
  stats = second["stats"]["static_ac_v256"]["train"]
  assert stats["token_compression_ratio"] > 3  # 'zzzz qqqq' compresses; a stale model expands it
  result = verify.run([f"--output_dir={out}"])
  assert result["mismatches"] == [] and result["file_problems"] == []


# --------------------------------------------------------------------------------------------
# 6. One job at a time per output directory.

def test_second_job_is_refused_while_the_lock_is_held(corpus, run_copy, capsys):
  pattern, _ = corpus
  lock = run_copy / rm.LOCK
  lock.write_text(json.dumps({"run_id": "other", "host": socket.gethostname(),
                              "pid": os.getpid(), "started": "now"}))
  before = snapshot(run_copy)
  rc, err = run_main(job_args(pattern, run_copy), capsys)
  assert_one_clear_error(rc, err, "another job holds the lock")
  assert "STALE" not in err and snapshot(run_copy) == before


def test_stale_lock_is_recognised_and_broken_on_request(corpus, run_copy, capsys):
  pattern, _ = corpus
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  lock = run_copy / rm.LOCK
  lock.write_text(json.dumps({"run_id": "crashed", "host": socket.gethostname(),
                              "pid": dead.pid, "started": "yesterday"}))
  rc, err = run_main(job_args(pattern, run_copy), capsys)
  assert_one_clear_error(rc, err, "STALE")
  assert "--break_lock" in err
  assert run_main(job_args(pattern, run_copy, "--break_lock"), capsys)[0] == 0
  assert not lock.exists()


_HOLD_THE_SWITCH = """
import pathlib, sys, time
from beam_pipeline import __main__ as job_main
from beam_pipeline import output_dir
real = output_dir.switch_over
def held_switch(*args, **kwargs):  # holds the lock until the test says go
  release = pathlib.Path(sys.argv[1])
  while not release.exists():
    time.sleep(0.1)
  return real(*args, **kwargs)
output_dir.switch_over = held_switch
sys.exit(job_main.main(sys.argv[2:]))
"""


def test_two_concurrent_jobs_one_wins_one_is_refused(corpus, tmp_path):
  """Two real processes into one directory: the second, started while the first holds the lock
  (its run built, its switch held), is refused; exactly the first run lands, nothing orphaned."""
  pattern, _ = corpus
  out = tmp_path / "shared"
  release = tmp_path / "release"
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  first = subprocess.Popen([sys.executable, "-c", _HOLD_THE_SWITCH, str(release),
                            *job_args(pattern, out)], cwd=REPO, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    while not list(out.glob(".staging-*/manifest.json")):
      assert first.poll() is None, first.communicate()
      import time
      time.sleep(0.2)
    second = subprocess.run([sys.executable, "-m", "beam_pipeline", *job_args(pattern, out)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  finally:
    release.write_text("go")
  _, first_err = first.communicate(timeout=600)
  assert first.returncode == 0, first_err
  assert second.returncode == 2 and "another job holds the lock" in second.stderr, second.stderr
  assert not (out / rm.LOCK).exists() and not list(out.glob(".staging-*"))
  assert verify.run([f"--output_dir={out}"])["file_problems"] == []


def test_verify_refuses_while_a_job_holds_the_lock(run_copy):
  (run_copy / rm.LOCK).write_text(json.dumps({"run_id": "x", "host": "elsewhere", "pid": 1}))
  with pytest.raises(pipeline.ConfigError, match="another job holds the lock"):
    verify.run([f"--output_dir={run_copy}"])


# --------------------------------------------------------------------------------------------
# 7. verify: named files, the run's own M1, a sample that checks something.

def test_verify_names_a_corrupt_shard_and_writes_its_report(run_copy, capsys):
  target = _shard(run_copy, "gzip_v256")
  data = bytearray(target.read_bytes())
  data[10] ^= 0x55  # a CRC byte: ReadFromTFRecord would raise on it
  target.write_bytes(bytes(data))
  rc, _ = run_main([f"--output_dir={run_copy}"], capsys, verify.main)
  assert rc == 1
  report = json.loads((run_copy / rm.VERIFY_REPORT).read_text())
  assert [line.split(": ")[0] for line in report["file_problems"]] == [str(target)]


@pytest.mark.parametrize("percent", ["0", "-5", "101"])
def test_verify_refuses_a_sample_that_checks_nothing(run_copy, percent, capsys):
  rc, err = run_main([f"--output_dir={run_copy}", f"--sample_percent={percent}"], capsys,
                     verify.main)
  assert_one_clear_error(rc, err, "--sample_percent")


def test_verify_without_a_run_is_one_clear_error(tmp_path, capsys):
  rc, err = run_main([f"--output_dir={tmp_path}"], capsys, verify.main)
  assert_one_clear_error(rc, err, "no complete run")


def test_verify_uses_the_runs_own_m1_checkpoint(tmp_path):
  docs = corpus_gen.make_documents(3, seed=44, mean_words=25)
  pattern = corpus_gen.write_c4_shards(tmp_path / "c4", docs)
  m1 = tmp_path / "my_m1"
  shutil.copytree(REPO / "m1_checkpoint", m1)
  out = tmp_path / "run"
  pipeline.run(job_args(pattern, out, f"--m1_checkpoint={m1}", "--example_bytes=256",
                        methods="equal_info_ac:b16:v65k"))
  result = verify.run([f"--output_dir={out}"])  # no --m1_checkpoint: the manifest's
  assert result["mismatches"] == [] and result["counters"][
      "equal_info_ac_b16_v65k/verified_records"] > 0
  other = tmp_path / "other_m1"
  shutil.copytree(m1, other)
  (other / "NOTES").write_text("a different checkpoint directory")
  with pytest.raises(pipeline.ConfigError, match="not the one that compressed"):
    verify.run([f"--output_dir={out}", f"--m1_checkpoint={other}"])


# --------------------------------------------------------------------------------------------
# 8 and clear errors: exit 2, one `error:` line, before any output is touched.

def test_zero_byte_gz_input_is_dead_lettered_and_counted(tmp_path):
  docs = corpus_gen.make_documents(6, seed=45, mean_words=40)
  pattern = corpus_gen.write_c4_shards(tmp_path / "c4", docs)
  (tmp_path / "c4" / "c4-train.empty.json.gz").write_bytes(b"")
  out = tmp_path / "run"
  manifest = pipeline.run(job_args(pattern, out, methods="bytes"))
  dead = [json.loads(line) for name in rm.dead_letter_files(manifest)
          for line in (out / name).read_text().splitlines()]
  assert [(d["path"].endswith("c4-train.empty.json.gz"), d["reason"]) for d in dead] == [
      (True, "corrupt_compressed_stream")]
  assert manifest["counters"]["sources/dead_letters"] == 1
  assert manifest["counters"]["sources/corrupt_files"] == 1


def test_a_switch_killed_while_removing_emptied_dirs_is_finished_by_the_next_job(
    tmp_path, monkeypatch):
  docs = corpus_gen.make_documents(6, seed=46, mean_words=40)
  pattern = corpus_gen.write_c4_shards(tmp_path / "c4", docs)
  empty = tmp_path / "c4" / "c4-train.empty.json.gz"
  empty.write_bytes(b"")
  out = tmp_path / "run"
  assert rm.dead_letter_files(pipeline.run(job_args(pattern, out, methods="bytes")))
  empty.unlink()  # the next run has no dead letters: dead_letters/ empties in its switch

  def killed(*args, **kwargs):
    raise KeyboardInterrupt("killed while removing emptied directories")
  monkeypatch.setattr(output_dir_lib, "_remove_emptied_dirs", killed)
  with pytest.raises(KeyboardInterrupt):
    pipeline.run(job_args(pattern, out, methods="bytes"))
  monkeypatch.undo()
  # The journal is still there, so the next job finishes that switch instead of refusing an
  # emptied directory it does not own.
  manifest = pipeline.run(job_args(pattern, out, methods="bytes"))
  assert rm.dead_letter_files(manifest) == [] and not (out / rm.DEAD_LETTERS_DIR).exists()


def _flag_cases(tmp_path, pattern, good_run):
  """(argv, the error's key phrase, the directory that must stay untouched)."""
  (tmp_path / "a_file").write_text("not a directory")
  bad_unigram = tmp_path / "unigram.json"
  bad_unigram.write_text('{"format": "something else"}')
  bad_spm = tmp_path / "x.model"
  bad_spm.write_bytes(b"\x00not a model")
  corrupt = tmp_path / "corrupt_run"
  corrupt.mkdir()
  (corrupt / layout.MANIFEST).write_text("{not json")
  one_doc = corpus_gen.write_c4_shards(tmp_path / "one", corpus_gen.make_documents(1, seed=5))
  other_pattern = pattern.replace("c4-train.*", "c4-train.00000-*")
  out = str(good_run)
  return [
      (job_args(str(pathlib.Path(pattern).parent), out), "is a directory", good_run),
      (job_args(pattern, tmp_path / "a_file"), "is a file", tmp_path),
      (job_args(pattern + ".nothing", out), "no files match", good_run),
      (job_args(pattern, corrupt), "not valid JSON", corrupt),
      (job_args(pattern, corrupt, "--overwrite"), "not valid JSON", corrupt),
      (job_args(pattern, out, f"--static_unigram={bad_unigram}"), "--static_unigram", good_run),
      (job_args(pattern, out, f"--spm_model={bad_spm}", methods="spm:v400"), "--spm_model",
       good_run),
      (job_args(pattern, out, f"--validation_input={pattern}"), "same pattern", good_run),
      (job_args(pattern, out, f"--validation_input={other_pattern}"), "leak", good_run),
      (job_args(one_doc, out, "--validation_percent=100", "--overwrite", methods="spm:v400"),
       "no train text", good_run),
      (["--method=bytes", f"--output_dir={out}"], "did you mean --methods", good_run),
      ([f"--ouput_dir={out}"], "did you mean --output_dir", good_run),
      (job_args(pattern, out, "--num_shards=0"), "--num_shards", good_run),
  ]


def test_bad_flags_are_one_clear_error_before_anything_is_touched(corpus, good_run, tmp_path,
                                                                  capsys):
  pattern, _ = corpus
  for argv, match, untouched in _flag_cases(tmp_path, pattern, good_run):
    before = snapshot(untouched)
    rc, err = run_main(argv, capsys)
    assert_one_clear_error(rc, err, match)
    assert snapshot(untouched) == before, argv


def test_spm_model_with_the_wrong_vocabulary_size_is_refused(corpus, tmp_path, capsys):
  pattern, _ = corpus
  out = tmp_path / "run"
  pipeline.run(job_args(pattern, out, methods="spm:v400"))
  (model,) = (out / "artifacts").glob("spm_v400-*.model")
  rc, err = run_main(job_args(pattern, tmp_path / "new", f"--spm_model={model}",
                              methods="spm:v500"), capsys)
  assert_one_clear_error(rc, err, "400 pieces")
  assert not (tmp_path / "new").exists()


def test_help_lists_the_jobs_flags_grouped_with_defaults(capsys):
  assert job_main.main(["--help"]) == 0
  text = capsys.readouterr().out
  for heading in ("input:", "methods and examples:", "models and artifacts:", "output:",
                  "runner:"):
    assert heading in text
  squeezed = "".join(text.split())  # argparse wraps long defaults anywhere
  assert "--methodsMETHODS" in squeezed
  assert "default:equal_info_ac:b16:v65k,static_ac:v256,gzip:v256,bytes,spm:v32k)" in squeezed
  assert "--output_dir" in text and "--help_beam" in text
  assert job_main.main(["--help_beam"]) == 0
  assert "--runner" in capsys.readouterr().out


def test_runner_configs_pass_the_unknown_flag_check(monkeypatch):
  from beam_pipeline import options
  for var in ("PROJECT", "REGION", "BUCKET", "IMAGE", "FLINK_JOB_SERVER", "SPARK_JOB_SERVER"):
    monkeypatch.setenv(var, "x")
  for config in sorted((REPO / "runner_configs").glob("*.yaml")):
    options.check_known_flags(options.runner_config_args(config.stem))


def test_tfds_validation_input_reads_the_validation_split():
  from apache_beam.options.pipeline_options import PipelineOptions

  from beam_pipeline import artifacts
  from beam_pipeline import options
  opts = PipelineOptions(["--source=tfds"]).view_as(options.CompressionOptions)
  assert artifacts.sources_options(opts, "validation")["tfds_split"] == "validation"
  assert artifacts.sources_options(opts, "train")["tfds_split"] == "train"


def test_reader_options_reach_the_readers(tmp_path):
  """--text_field, --text_lines and --invalid_utf8 are flags, and they change what is read."""
  jsonl = tmp_path / "docs.jsonl"
  jsonl.write_text("\n".join(json.dumps({"body": f"document number {i} " * 20})
                             for i in range(8)) + "\n")
  out = tmp_path / "run"
  manifest = pipeline.run(["--source=jsonl", f"--input={jsonl}", "--text_field=body",
                           f"--output_dir={out}", "--methods=bytes", "--examples_per_run=0",
                           "--validation_percent=0"])
  assert manifest["counters"]["sources/documents_read"] == 8
  text = tmp_path / "lines.txt.gz"
  with gzip.open(text, "wb") as f:
    f.write(b"one line\nanother line\nbad \xff byte\n")
  manifest = pipeline.run(["--source=text", f"--input={text}", "--text_lines",
                           "--invalid_utf8=replace", f"--output_dir={tmp_path / 'run2'}",
                           "--methods=bytes", "--examples_per_run=0", "--validation_percent=0"])
  assert manifest["counters"]["sources/documents_read"] == 3
  assert manifest["counters"]["sources/invalid_utf8_replaced"] == 1


# --------------------------------------------------------------------------------------------
# Regressions found by a red-team pass over the above.

def test_a_users_files_that_look_like_ours_are_still_theirs(corpus, tmp_path, capsys):
  """A bare verify.json list, 'manifest.json.tmp-notes', an empty directory, a symlinked
  artifacts/ dir: none is ours without a manifest of ours saying so."""
  pattern, _ = corpus
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  for name, make in (
      ("verify.json", lambda d: (d / "verify.json").write_text('["my", "results"]')),
      ("manifest.json.tmp-notes", lambda d: (d / "manifest.json.tmp-notes").write_text("n")),
      ("project/sub/", lambda d: (d / "project" / "sub").mkdir(parents=True)),
      ("artifacts/", lambda d: (d / "artifacts").symlink_to(elsewhere)),
  ):
    user = tmp_path / name.replace("/", "_").replace(".", "_")
    user.mkdir()
    make(user)
    before = sorted(str(p.relative_to(user)) for p in user.rglob("*"))
    rc, err = run_main(job_args(pattern, user), capsys)
    assert_one_clear_error(rc, err, name.rstrip("/") if name != "artifacts/" else "artifacts")
    assert sorted(str(p.relative_to(user)) for p in user.rglob("*")) == before
  assert not list(elsewhere.iterdir())


def test_input_that_covers_the_output_dir_is_refused(tmp_path, capsys):
  docs = corpus_gen.make_documents(3, seed=61, mean_words=20)
  corpus_gen.write_c4_shards(tmp_path / "data", docs)
  rc, err = run_main(job_args(str(tmp_path / "**"), tmp_path / "data" / "out"), capsys)
  assert_one_clear_error(rc, err, "its own output as input")
  # An output directory inside the corpus's directory is fine when the glob cannot reach it.
  rc, err = run_main(job_args(str(tmp_path / "data" / "*.json.gz"), tmp_path / "data" / "out",
                              "--validation_percent=0"), capsys)
  assert rc == 0, err


def test_validation_leak_is_caught_whatever_the_spelling(corpus, tmp_path, capsys, monkeypatch):
  pattern, _ = corpus
  directory = pathlib.Path(pattern).parent
  (tmp_path / "link").symlink_to(directory)
  monkeypatch.chdir(directory.parent)
  relative = f"{directory.name}/c4-train.*.json.gz"
  for other in (str(directory / "c4-train.00001-of-00002.json.gz"),
                str(tmp_path / "link" / "c4-train.00001-of-00002.json.gz"),
                f"{directory.name}/../{directory.name}/c4-train.00000-of-00002.json.gz"):
    rc, err = run_main(job_args(relative, tmp_path / "out", f"--validation_input={other}"),
                       capsys)
    assert_one_clear_error(rc, err, "leak")


def test_bad_paths_are_one_clear_error(corpus, tmp_path, capsys):
  pattern, _ = corpus
  (tmp_path / "a_file").write_text("x")
  for out, match in (("", "--output_dir is empty"), (str(tmp_path / "c[1]"), "glob character"),
                     (f"file://{tmp_path}/o", "file://"),
                     (str(tmp_path / "a_file" / "sub"), "cannot be created"),
                     ("/proc/no_such_dir/x", "cannot be created")):
    rc, err = run_main(job_args(pattern, out), capsys)
    assert_one_clear_error(rc, err, match)
  rc, err = run_main(job_args(pattern, tmp_path / "o", f"--artifact_cache_dir={tmp_path / 'a_file'}"),
                     capsys)
  assert_one_clear_error(rc, err, "is a file")
  broken = tmp_path / "c4b"
  broken.mkdir()
  shutil.copy(sorted(pathlib.Path(pattern).parent.glob("*.gz"))[0], broken / "c4-train.0.json.gz")
  (broken / "c4-train.1.json.gz").symlink_to(tmp_path / "gone.json.gz")
  rc, err = run_main(job_args(str(broken / "*.json.gz"), tmp_path / "o"), capsys)
  assert_one_clear_error(rc, err, "broken symbolic link")
  assert not (tmp_path / "o").exists()


def test_artifact_cache_inside_the_output_dir_is_ours(corpus, tmp_path):
  pattern, _ = corpus
  out = tmp_path / "run"
  for _ in range(2):
    pipeline.run(job_args(pattern, out, f"--artifact_cache_dir={out / 'cache'}"))
  assert list((out / "cache").glob("static_unigram-*.json"))


def test_kill_while_staging_is_removed_leaves_a_usable_directory(corpus, run_copy):
  """The marker goes last; a staging dir the journal names is ours even without it."""
  pattern, _ = corpus
  # Killed after the new files and manifest were in place, while deleting the staging dir,
  # just after its marker: only the staged manifest is left there.
  staging = run_copy / ".staging-20000101T000000Z-00000000"
  staging.mkdir()
  shutil.copy(run_copy / layout.MANIFEST, staging / layout.MANIFEST)
  manifest = json.loads((run_copy / layout.MANIFEST).read_text())
  (run_copy / rm.SWITCH_JOURNAL).write_text(json.dumps(
      {"staging": staging.name, "old_files": [],
       "new_files": sorted(rm.recorded_paths(manifest))}))
  pipeline.run(job_args(pattern, run_copy))
  assert not staging.exists() and not (run_copy / rm.SWITCH_JOURNAL).exists()
  assert verify.run([f"--output_dir={run_copy}"])["file_problems"] == []


def test_break_lock_refuses_a_live_job(corpus, run_copy, capsys):
  pattern, _ = corpus
  live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    (run_copy / rm.LOCK).write_text(json.dumps({"run_id": "live", "pid": live.pid,
                                                "host": socket.gethostname()}))
    rc, err = run_main(job_args(pattern, run_copy, "--break_lock"), capsys)
    assert_one_clear_error(rc, err, "still runs")
    assert (run_copy / rm.LOCK).exists()
  finally:
    live.kill()
    live.wait()


def test_sigterm_releases_the_lock_and_the_staging(corpus, tmp_path):
  import signal
  import time
  pattern, _ = corpus
  out = tmp_path / "run"
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  proc = subprocess.Popen([sys.executable, "-m", "beam_pipeline", *job_args(pattern, out)],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  while not list(out.glob(".staging-*")):
    assert proc.poll() is None, proc.communicate()
    time.sleep(0.1)
  proc.send_signal(signal.SIGTERM)
  proc.communicate(timeout=300)
  assert proc.returncode != 0
  assert not (out / rm.LOCK).exists() and not list(out.glob(".staging-*"))


def test_a_damaged_artifact_cache_is_repaired(corpus, tmp_path):
  pattern, _ = corpus
  out = tmp_path / "run"
  methods = "static_ac:v256,spm:v400"
  first = pipeline.run(job_args(pattern, out, methods=methods))
  (model,) = (out / "artifacts").glob("spm_v400-*.model")
  (unigram,) = (out / "artifacts").glob("static_unigram-*.json")
  model.write_bytes(model.read_bytes()[:100])
  unigram.write_text("{}")
  second = pipeline.run(job_args(pattern, out, methods=methods))
  assert second["spm_model_sha256"] == first["spm_model_sha256"]
  assert second["static_unigram_sha256"] == first["static_unigram_sha256"]
  assert verify.run([f"--output_dir={out}"])["file_problems"] == []


def _as_version_1(run: pathlib.Path) -> None:
  """Rewrites a run's manifest as the previous release wrote it (version 1)."""
  manifest = json.loads((run / layout.MANIFEST).read_text())
  dead_letter_parts = rm.dead_letter_files(manifest)
  manifest["version"] = 1
  for key in ("run_id", "run_files", "artifacts", "m1_checkpoint", "m1_context"):
    manifest.pop(key, None)
  flags = manifest["flags"]
  for key in ("text_field", "text_lines", "invalid_utf8", "spm_train_bytes"):
    flags.pop(key, None)
  flags["spm_train_docs_permille"] = 1000
  (run / layout.MANIFEST).write_text(json.dumps(manifest))
  (run / rm.VERIFY_REPORT).write_text("[]")
  # That release always wrote its dead letters to one file beside the shards, empty or not.
  for name in dead_letter_parts:
    (run / name).unlink()
  if (run / rm.DEAD_LETTERS_DIR).is_dir():
    (run / rm.DEAD_LETTERS_DIR).rmdir()
  (run / rm.DEAD_LETTERS).touch()


def test_a_version_1_run_is_verified_read_and_replaced(corpus, run_copy):
  import seqio_tasks
  pattern, _ = corpus
  _as_version_1(run_copy)
  result = verify.run([f"--output_dir={run_copy}"])
  assert result["file_problems"] == [] and result["mismatches"] == []
  _as_version_1(run_copy)
  assert seqio_tasks.data.list_record_files(str(run_copy), "bytes", "bytes", "train")
  pipeline.run(job_args(pattern, run_copy))  # the same flags: replaced without --overwrite
  assert json.loads((run_copy / layout.MANIFEST).read_text())["version"] == rm.VERSION


def test_version_1_gs_paths_are_made_relative():
  manifest = {"format": rm.FORMAT, "version": 1, "flags": {}, "methods": ["bytes"],
              "records": {}, "files": [{"path": "gs://b/run/bytes/train/data-0.tfrecord",
                                        "method": "bytes", "split": "train"}]}
  fixed = rm.relative_to(rm.parse_manifest(json.dumps(manifest).encode(), "m"), "gs://b/run")
  assert rm.shard_infos(fixed)[0]["path"] == "bytes/train/data-0.tfrecord"
  assert rm.check_shard_set("gs://b/run", fixed, "bytes", "train",
                            ["gs://b/run/bytes/train/data-0.tfrecord"]) == []
  with pytest.raises(rm.ManifestError, match="outside"):
    rm.relative_to(manifest, "gs://b/other")


def test_verify_from_elsewhere_and_per_method_problems(corpus, tmp_path, monkeypatch, capsys):
  """Relative paths resolve against the run; a bad file of one method hides nothing of another."""
  pattern, _ = corpus
  monkeypatch.chdir(tmp_path)
  pipeline.run(job_args(pattern, "rel_run"))
  monkeypatch.chdir("/")
  run = tmp_path / "rel_run"
  assert verify.run([f"--output_dir={run}"])["mismatches"] == []
  (run / layout.STATS).write_text("damaged")
  shard = _shard(run, "bytes")
  shard.unlink()
  manifest = json.loads((run / layout.MANIFEST).read_text())
  manifest["files"] = [f for f in manifest["files"] if run / f["path"] != shard]
  (run / layout.MANIFEST).write_text(json.dumps(manifest))
  result = verify.run([f"--output_dir={run}"])
  assert any(layout.STATS in p for p in result["file_problems"])
  assert any(m["method"] == "bytes" and m["reason"] == "no records"
             for m in result["mismatches"]), result
  rc, err = run_main([f"--output_dir={run}", "--num_shards=7"], capsys, verify.main)
  assert_one_clear_error(rc, err, "flag of the job")
