"""End-to-end tests of the Beam job on a small generated corpus."""
import hashlib
import json
import pathlib

import pytest

from beam_pipeline import pipeline
from beam_pipeline import verify
from neural_compression import methods
from neural_compression import output_layout as layout
from tests import pipeline_test_corpus as corpus_gen

METHODS = "static_equal_info_ac:b16:v65k,static_equal_info_ac:b24:v65k,static_ac:v256"


@pytest.fixture(scope="module")
def c4_input(tmp_path_factory):
  docs = corpus_gen.make_documents(40, seed=7)
  return corpus_gen.write_c4_shards(tmp_path_factory.mktemp("c4"), docs), docs


def job_args(pattern, out, *extra):
  return ["--source=c4_json", f"--input={pattern}", f"--output_dir={out}", f"--methods={METHODS}",
          "--docs_per_run=8", "--example_bytes=2048", "--examples_per_run=0", "--num_shards=3",
          "--validation_percent=25", "--m2_length=128", "--batch_size=5",
          f"--artifact_cache_dir={out}-artifacts", *extra]


def file_hashes(out: pathlib.Path) -> dict:
  return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(out.rglob("*.tfrecord"))}


@pytest.fixture(scope="module")
def direct_run(c4_input, tmp_path_factory):
  pattern, _ = c4_input
  out = tmp_path_factory.mktemp("runs") / "direct"
  return out, pipeline.run(job_args(pattern, out))


def test_records_decode_to_the_source_and_stats_match(direct_run, c4_input):
  out, manifest = direct_run
  _, docs = c4_input
  result = verify.run([f"--output_dir={out}"])
  assert result["mismatches"] == [], result["mismatches"][:3]
  for spec in methods.parse_methods(METHODS):
    assert result["counters"][f"{spec.slug}/verified_records"] > 0
  # Stats agree with a recomputation from the records and the corpus itself.
  total_bytes = sum(len(d["text"].encode()) + 1 for d in docs)
  stats = manifest["stats"]
  for slug, by_split in stats.items():
    assert sum(s["input_bytes"] for s in by_split.values()) == total_bytes, slug
    for split, s in by_split.items():
      records = [verify.parse_record(r) for r in _read_records(out / slug / split)]
      assert len(records) == s["m2_examples"] == manifest["records"][f"{slug}/{split}"]
      assert sum(len(r["tokens"]) for r in records) == s["m2_tokens"]
      assert sum(r["raw_bytes"] for r in records) == s["m2_raw_bytes"]
      assert s["token_compression_ratio"] == pytest.approx(s["input_bytes"] / s["tokens"])
  assert manifest["counters"]["runs/bytes_in_examples"] == total_bytes


def _read_records(directory):
  import tensorflow as tf
  files = sorted(str(p) for p in directory.glob("data-*.tfrecord"))
  return [r.numpy() for r in tf.data.TFRecordDataset(files)]


def test_verify_reports_a_corrupted_record(direct_run, tmp_path, c4_input):
  import shutil
  out, _ = direct_run
  copy = tmp_path / "copy"
  shutil.copytree(out, copy)
  slug = methods.parse_method("static_equal_info_ac:b16:v65k").slug
  shard = sorted((copy / slug / "train").glob("data-*.tfrecord"))[0]
  import tensorflow as tf
  records = _read_records(shard.parent)
  first = tf.train.Example.FromString(records[0])
  tokens = first.features.feature[layout.TARGETS].int64_list.value
  tokens[3] = (tokens[3] + 1) % 65536
  with tf.io.TFRecordWriter(str(shard)) as w:
    w.write(first.SerializeToString())
  result = verify.run([f"--output_dir={copy}", "--methods=static_equal_info_ac:b16:v65k"])
  # The file no longer matches its manifest entry: named, and its records are not decoded.
  assert [line.split(": ")[0] for line in result["file_problems"]] == [str(shard)]
  # A wrong record in a file whose manifest entry matches (e.g. a compressor bug): the decode
  # check catches it.
  manifest_path = copy / layout.MANIFEST
  manifest = json.loads(manifest_path.read_text())
  data = shard.read_bytes()
  for info in manifest["files"]:
    if copy / info["path"] == shard:
      info.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), records=1)
  manifest_path.write_text(json.dumps(manifest))
  result = verify.run([f"--output_dir={copy}", "--methods=static_equal_info_ac:b16:v65k"])
  assert result["file_problems"] == []
  assert any(m["method"] == slug for m in result["mismatches"]), result["counters"]


def test_the_local_runner_groups_through_spill_files_and_removes_them(direct_run):
  out, manifest = direct_run
  # --shuffle=auto on DirectRunner: documents and records went through spill files ...
  assert manifest["counters"]["grouping/spill_files"] >= 2, manifest["counters"]
  # ... which are gone with the staging directory, and no run file names them.
  assert not list(out.rglob("*.spill")) and not list(out.glob(".staging-*"))
  assert not any(".spill" in f["path"] for f in manifest["files"] + manifest["run_files"])


@pytest.mark.parametrize("runner_args", [
    ["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
    ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"],
    ["--shuffle=beam"],
    ["--shuffle=files", "--shuffle_buffer_bytes=4096", "--direct_running_mode=multi_processing",
     "--direct_num_workers=2"],
], ids=["direct_multiprocessing", "portable_embed", "beam_shuffle", "files_4k_buffer_2_workers"])
def test_runners_write_identical_files(direct_run, c4_input, tmp_path, runner_args):
  pattern, _ = c4_input
  out, _ = direct_run
  other = tmp_path / "other"
  pipeline.run(job_args(pattern, other, "--batch_size=2", *runner_args))
  assert file_hashes(other) == file_hashes(out)
  assert file_hashes(out), "no files compared"


def test_second_run_replaces_the_first_with_identical_bytes(direct_run, c4_input, tmp_path):
  pattern, _ = c4_input
  out, _ = direct_run
  again = tmp_path / "again"
  pipeline.run(job_args(pattern, again, "--num_shards=5"))
  five = file_hashes(again)
  # A recorded shard of the older run (it had more shards) must not survive the new one.
  manifest = pipeline.run(job_args(pattern, again, "--overwrite"))
  assert file_hashes(again) == file_hashes(out)
  assert not any(name.endswith("-of-00005.tfrecord") for name in file_hashes(again)), five
  # A file no run recorded is refused, never cleaned, even with --overwrite.
  stale = again / "static_ac_v256" / "train" / "data-00009-of-00010.tfrecord"
  stale.write_bytes(b"old")
  (again / "notes.txt").write_text("mine")
  with pytest.raises(pipeline.ConfigError, match="notes.txt"):
    pipeline.run(job_args(pattern, again, "--overwrite"))
  assert (again / "notes.txt").read_text() == "mine" and stale.read_bytes() == b"old"
  assert sorted(f["path"] for f in manifest["files"]) == sorted(file_hashes(out))


def test_different_flags_into_the_same_directory_are_refused(direct_run, c4_input):
  pattern, _ = c4_input
  out, _ = direct_run
  with pytest.raises(pipeline.ConfigError, match="--overwrite"):
    pipeline.run(job_args(pattern, out, "--m2_length=64"))


def test_bad_configuration_fails_before_the_job(tmp_path, c4_input):
  pattern, _ = c4_input
  with pytest.raises(pipeline.ConfigError, match="unknown method"):
    pipeline.run(job_args(pattern, tmp_path / "x", "--methods=lzma:v256"))
  with pytest.raises(pipeline.ConfigError, match="b=8"):
    pipeline.run(job_args(pattern, tmp_path / "x", "--methods=equal_info_ac:b8:v256"))
  with pytest.raises(pipeline.ConfigError, match="m2_length"):
    pipeline.run(job_args(pattern, tmp_path / "x", "--m2_length=2",
                          "--methods=static_equal_info_ac:b24:v65k"))
  assert not (tmp_path / "x" / layout.MANIFEST).exists()


def test_progress_log_lines_reach_stderr(capfd):
  """`python -m beam_pipeline` shows INFO progress lines although TF/absl configured logging."""
  import logging
  import tensorflow  # noqa: F401 (installs the WARNING-level root handler that hid them)
  from beam_pipeline import __main__ as entry
  root = logging.getLogger()
  handlers, level = list(root.handlers), root.level
  try:
    entry.configure_logging()
    logging.info("compressed 1 examples (progress probe)")
    logging.getLogger("apache_beam").info("beam chatter")
    err = capfd.readouterr().err
  finally:
    root.handlers[:] = handlers
    root.setLevel(level)
  assert "progress probe" in err
  assert "beam chatter" not in err
