"""Reliability of the Beam job: bad input, accounting, faults, atomicity, reproducibility, and
a decoder that never hangs or crashes on random tokens."""
import gzip
import hashlib
import json
import pathlib

import numpy as np
import pytest

from beam_pipeline import pipeline
from beam_pipeline import verify
from neural_compression import methods
from neural_compression import output_layout as layout
from neural_compression import run_manifest as rm
from tests import pipeline_test_corpus as corpus_gen

METHODS = "static_equal_info_ac:b16:v65k,static_ac:v256,gzip:v256,bytes"


def _args(pattern, out, *extra, methods_=METHODS):
  return ["--source=c4_json", f"--input={pattern}", f"--output_dir={out}",
          f"--methods={methods_}", "--docs_per_run=4", "--example_bytes=1024",
          "--examples_per_run=0", "--num_shards=2", "--validation_percent=30",
          "--m2_length=64", "--batch_size=4", f"--artifact_cache_dir={out}-artifacts", *extra]


@pytest.fixture(scope="module")
def bad_corpus(tmp_path_factory):
  """Good documents mixed with every kind of bad input; returns (pattern, expectations)."""
  d = tmp_path_factory.mktemp("bad")
  good = corpus_gen.make_documents(12, seed=21, mean_words=60)
  special = [
      {"text": "", "url": "https://t.test/empty", "timestamp": "t"},
      {"text": "nul\x00 and controls \x01\x07\x1b\x7f end", "url": "https://t.test/ctrl",
       "timestamp": "t"},
      {"text": "Ελληνικά, русский, العربية, 中文, हिन्दी, 😀", "url": "https://t.test/intl",
       "timestamp": "t"},
      {"text": "x" * 300_000, "url": "https://t.test/long", "timestamp": "t"},
  ]
  lines = [json.dumps(doc) for doc in good + special]
  bad_lines = ['{"text": "unterminated', '{"url": "https://t.test/no-text", "timestamp": "t"}',
               '{"text": 17, "url": "u", "timestamp": "t"}', "[1, 2, 3]"]
  with gzip.open(d / "c4-train.00000-of-00002.json.gz", "wt", encoding="utf-8") as f:
    f.write("\n".join(lines[:8] + bad_lines[:2] + lines[8:]) + "\n")
  with open(d / "c4-train.00001-of-00002.json", "wb") as f:
    f.write(("\n".join(bad_lines[2:]) + "\n").encode() + b'{"text": "\xff\xfe bad utf8"}\n')
  # A truncated gzip shard: its first lines survive, the rest is dead-lettered.
  full = gzip.compress(("\n".join(json.dumps(doc) for doc in
                                  corpus_gen.make_documents(6, seed=22)) + "\n").encode())
  (d / "c4-train.truncated.json.gz").write_bytes(full[:len(full) * 2 // 3])
  return str(d / "c4-train.*.json*"), good + special


@pytest.fixture(scope="module")
def bad_run(bad_corpus, tmp_path_factory):
  pattern, _ = bad_corpus
  out = tmp_path_factory.mktemp("badrun") / "out"
  return out, pipeline.run(_args(pattern, out))


def _dead_letter_lines(out, manifest):
  return [line for name in rm.dead_letter_files(manifest)
          for line in (out / name).read_text().splitlines()]


def test_dead_letters_are_sharded_by_their_own_bytes(bad_run, bad_corpus, tmp_path, monkeypatch):
  out, manifest = bad_run
  one_part = _dead_letter_lines(out, manifest)
  # Shards of ~300 bytes: several parts, each sorted, together exactly the same lines.
  monkeypatch.setattr(pipeline, "DEAD_LETTER_SHARD_BYTES", 300)
  small = tmp_path / "small_parts"
  sharded = pipeline.run(_args(bad_corpus[0], small))
  parts = rm.dead_letter_files(sharded)
  total = sum(len(line) + 1 for line in one_part)
  assert len(parts) > 1 and all(p.endswith(f"-of-{-(-total // 300):05d}.jsonl") for p in parts)
  for name in parts:
    lines = (small / name).read_text().splitlines()
    assert lines == sorted(lines)
  assert sorted(_dead_letter_lines(small, sharded)) == one_part
  assert sharded["counters"]["sources/dead_letters"] == len(one_part)


def test_bad_input_is_processed_or_dead_lettered_never_lost(bad_run, bad_corpus):
  out, manifest = bad_run
  c = manifest["counters"]
  dead = [json.loads(line) for name in rm.dead_letter_files(manifest)
          for line in (out / name).read_text().splitlines()]
  # Far below one shard's worth: one part, listed in the manifest.
  assert rm.dead_letter_files(manifest) == [rm.dead_letter_part(0, 1)]
  reasons = sorted(d["reason"] for d in dead)
  assert c["sources/dead_letters"] == len(dead) >= 6, (c, reasons)
  for reason in ("invalid_json", "missing_text", "text_not_string", "not_a_json_object",
                 "invalid_utf8", "corrupt_compressed_stream"):
    assert reason in reasons, f"no dead letter for {reason}: {reasons}"
  assert all(d["path"] and d["line"] >= 1 for d in dead), dead
  # Every document that parsed, including the empty, control-byte, non-English and long ones,
  # is in the examples, and every record decodes back to its source bytes.
  result = verify.run([f"--output_dir={out}"])
  assert result["mismatches"] == [], result["mismatches"][:3]
  for spec in methods.parse_methods(METHODS):
    assert result["counters"][f"{spec.slug}/verified_records"] > 0, result["counters"]


def test_counters_account_for_every_byte_and_document(bad_run):
  _, manifest = bad_run
  c = manifest["counters"]
  for name, check in manifest["accounting"].items():
    assert check["ok"], f"{name}: {check['lhs']} != {check['rhs']}"
  assert c["sources/bytes_read"] == c["sources/bytes_emitted"] + c["sources/bytes_dead_lettered"], c
  assert c["sources/bytes_dead_lettered"] > 0 and c["runs/bytes_in_examples"] > 300_000, c
  assert c["sources/documents_read"] == c["runs/documents_in_runs"], c


def test_wrong_configuration_fails_before_the_job(tmp_path, bad_corpus):
  pattern, _ = bad_corpus
  out = tmp_path / "o"
  cases = {
      "--methods=equal_info_ac:b16:v131k": "vocabulary",
      "--methods=equal_info_ac:b4:v256": "b=4",
      "--methods=static_equal_info_ac:b16:v65k:fancy": "write",
      "--methods=gzip:v4096": None,  # accepted by the parser, refused by the compressor
      "--num_shards=0": "num_shards",
      f"--m1_checkpoint={tmp_path / 'nowhere'}": "m1_checkpoint",
  }
  for flag, message in cases.items():
    extra = [flag] if not flag.startswith("--methods") else []
    methods_ = flag.split("=", 1)[1] if flag.startswith("--methods") else (
        "equal_info_ac:b16:v65k" if "m1_checkpoint" in flag else METHODS)
    with pytest.raises((pipeline.ConfigError, ValueError)) as info:
      pipeline.run(_args(pattern, out, *extra, methods_=methods_))
    if message:
      assert message in str(info.value), (flag, str(info.value))
  assert not (out / layout.MANIFEST).exists()


def test_corrupt_m1_checkpoint_is_refused_before_the_job(tmp_path, bad_corpus):
  from tests import m1_test_checkpoints
  pattern, _ = bad_corpus
  ckpt = m1_test_checkpoints.make_checkpoint(tmp_path / "m1")
  weights = ckpt / "weights.npz"
  data = bytearray(weights.read_bytes())
  data[100] ^= 0xFF
  weights.write_bytes(bytes(data))
  with pytest.raises(pipeline.ConfigError, match="sha256"):
    pipeline.run(_args(pattern, tmp_path / "o", f"--m1_checkpoint={ckpt}",
                       methods_="equal_info_ac:b16:v65k"))


def test_a_failing_bundle_is_retried_and_output_is_identical(bad_run, bad_corpus, tmp_path):
  pattern, _ = bad_corpus
  out, _ = bad_run
  retried = tmp_path / "retried"
  marker = tmp_path / "fail-once.marker"
  pipeline.run(_args(pattern, retried, "--runner=BundleBasedDirectRunner",
                     f"--fail_once_for_testing={marker}"))
  assert marker.exists(), "the fault was never injected"
  assert _hashes(retried) == _hashes(out)


def test_manifest_lists_every_file_with_its_sha256(bad_run):
  out, manifest = bad_run
  listed = {f["path"]: f["sha256"] for f in manifest["files"]}
  assert listed == _hashes(out), "manifest and files differ"
  assert sum(f["records"] for f in manifest["files"]) == sum(manifest["records"].values())


def _hashes(out: pathlib.Path) -> dict:
  return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(out.rglob("*.tfrecord"))}


def test_a_100_megabyte_document_is_processed(tmp_path):
  rng = np.random.default_rng(0)
  letters = np.frombuffer(b"abcdefghij klmnopqrstuvwxyz\n", np.uint8)
  text = letters[rng.integers(0, len(letters), 100 * 2 ** 20)].tobytes().decode()
  d = tmp_path / "big"
  d.mkdir()
  with open(d / "c4-train.00000-of-00001.json", "w") as f:
    f.write(json.dumps({"text": text, "url": "https://t.test/100mb", "timestamp": "t"}) + "\n")
    f.write(json.dumps({"text": "small", "url": "https://t.test/small", "timestamp": "t"}) + "\n")
  out = tmp_path / "out"
  manifest = pipeline.run(["--source=c4_json", f"--input={d}/*.json", f"--output_dir={out}",
                           "--methods=bytes,gzip:v256", "--examples_per_run=3",
                           "--validation_percent=0", "--m2_length=64",
                           f"--artifact_cache_dir={out}-artifacts"])
  c = manifest["counters"]
  assert c["runs/document_text_bytes"] == len(text) + 5, c
  assert c["runs/bytes_not_sampled"] == len(text) + 5 + 2 - 3 * 10240, c
  assert all(check["ok"] for check in manifest["accounting"].values()), manifest["accounting"]
