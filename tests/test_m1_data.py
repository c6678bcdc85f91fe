"""M1's data stream: the job's bytes records read back whole, sharded per host, deterministic
batches, mid-epoch resume, and clear refusals of runs that cannot feed M1."""
from __future__ import annotations

import collections
import functools
import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from neural_compression import symbols as sym
from neural_compression.m1 import data as m1_data
from tests import pipeline_test_corpus as corpus_gen
from tests.test_seqio_tasks import EXAMPLE_BYTES, _tmpdir, job_args, source_examples


@functools.lru_cache(maxsize=None)
def make_bytes_run():
  """A job run with --methods=bytes keeping whole examples; returns (output_dir, source
  examples by id, input glob). Built once per session (the two-step flow test reuses it)."""
  from beam_pipeline import pipeline
  root = _tmpdir()
  docs = corpus_gen.make_documents(60, seed=11, mean_words=120)
  pattern = corpus_gen.write_c4_shards(root / "c4", docs)
  out = root / "bytes_run"
  pipeline.run(job_args(pattern, str(out), ["bytes"], "--m2_mode=split",
                        f"--m2_length={EXAMPLE_BYTES}", "--num_shards=3"))
  return str(out), source_examples(docs), pattern


def _key(x: np.ndarray) -> bytes:
  return np.asarray(x, np.int32).tobytes()


def test_job_records_read_back_every_example_whole():
  out, source, _ = make_bytes_run()
  for split in ("train", "validation"):
    records = m1_data.job_records(out, split)
    assert 1 <= len(records.files) <= 3 and all(f.startswith(out) for f in records.files)
    read = m1_data.read_examples(records)
    want = [x for k, x in source.items() if k.startswith(split)]
    assert len(read) == records.num_records == len(want)
    assert collections.Counter(map(_key, read)) == collections.Counter(map(_key, want))
    assert records.num_symbols == sum(len(x) for x in want)


def test_hosts_read_disjoint_shares_that_cover_the_split():
  out, _, _ = make_bytes_run()
  records = m1_data.job_records(out, "train")
  everything = collections.Counter(map(_key, m1_data.read_examples(records)))
  for hosts in (2, 5):  # 5 hosts > 3 files: records, not files, are dealt out
    shares = [collections.Counter(
        _key(x) for x in m1_data.example_dataset(records, seed=0, num_hosts=hosts, host=h,
                                                 shuffle=False, repeat=False)
        .as_numpy_iterator()) for h in range(hosts)]
    assert sum(shares, collections.Counter()) == everything
    assert all(share for share in shares)


def _batches(source, count, **kw):
  stream = m1_data.WindowBatches(source, **kw)
  return stream, [stream.next_batch(step) for step in range(count)]


def test_batches_are_deterministic_windows_of_the_records_and_resume_mid_epoch(tmp_path):
  out, source, _ = make_bytes_run()
  records = m1_data.job_records(out, "train")
  kw = dict(seq_len=64, batch_size=8, seed=3, reset_fraction=0.25, reset_max_len=5,
            example_shuffle=4, window_shuffle=16)
  _, whole = _batches(records, 12, **kw)
  _, again = _batches(records, 12, **kw)
  for a, b in zip(whole, again):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  _, other_seed = _batches(records, 1, **{**kw, "seed": 4})
  assert not np.array_equal(other_seed[0]["targets"], whole[0]["targets"])
  # Window rows are seq_len windows of the examples, BOS-led; PAD carries no weight.
  windows = {_key(w) for w in m1_data.iterate_windows(records, 64)}
  batch = whole[0]
  assert all(_key(row) in windows for row in batch["targets"][:6])
  np.testing.assert_array_equal(batch["inputs"][:6, 0], m1_data.BOS)
  np.testing.assert_array_equal(batch["inputs"][:6, 1:], batch["targets"][:6, :-1])
  np.testing.assert_array_equal(batch["weights"] == 0, batch["targets"] == sym.PAD)
  # Reset rows: BOS-led segments of 1..5 symbols cut from the batch's own windows.
  for row in (6, 7):
    seg = batch["segment_ids"][row]
    starts = np.flatnonzero(np.diff(np.concatenate([[-1], seg])))
    np.testing.assert_array_equal(batch["inputs"][row, starts], m1_data.BOS)
    assert np.all(np.diff(np.append(starts, 64)) <= 5)
  # An epoch is ~23 batches here: stop after 5, save the position, continue in a new stream.
  first, _ = _batches(records, 5, **kw)
  first.save(str(tmp_path / "data_5"))
  resumed = m1_data.WindowBatches(records, **kw)
  resumed.restore(str(tmp_path / "data_5"))
  for step in range(5, 12):
    got = resumed.next_batch(step)
    for k in got:
      np.testing.assert_array_equal(got[k], whole[step][k])


def test_in_memory_examples_use_the_same_reader():
  docs = [sym.document_symbols(f"document {i} " * (10 + i)) for i in range(9)]
  source = m1_data.InMemoryExamples.from_documents(docs, "test docs", docs_per_run=4,
                                                   example_symbols=100)
  # Runs of 4 documents, EOS after each, cut into 100-symbol examples: every symbol once.
  assert source.num_symbols == sum(len(d) for d in docs)
  assert all(len(e) <= 100 for e in source.examples)
  windows = list(m1_data.iterate_windows(source, 32))
  assert sum(int((w != sym.PAD).sum()) for w in windows) == source.num_symbols
  assert sum(int((w == sym.EOS).sum()) for w in windows) == len(docs)
  _, batches = _batches(source, 3, seq_len=32, batch_size=4, seed=0)
  assert batches[0]["inputs"].shape == (4, 32)


def _fake_run(directory: pathlib.Path, **flags) -> str:
  from neural_compression import run_manifest
  directory.mkdir(parents=True, exist_ok=True)
  methods = flags.pop("methods", ["bytes"])
  manifest = {"format": run_manifest.FORMAT, "version": run_manifest.VERSION,
              "flags": {"m2_length": 10240, "example_bytes": 10240, "m2_mode": "trim", **flags},
              "methods": methods, "files": [], "run_files": [], "records": {}}
  (directory / "manifest.json").write_text(json.dumps(manifest))
  return str(directory)


def test_runs_that_cannot_feed_m1_are_refused_with_the_command_to_run(tmp_path):
  with pytest.raises(m1_data.DataError, match="--methods=bytes"):
    m1_data.job_records(str(tmp_path / "nothing"), "train")
  with pytest.raises(m1_data.DataError, match="add `bytes` to --methods"):
    m1_data.job_records(_fake_run(tmp_path / "gzip", methods=["gzip:v256"]), "train")
  with pytest.raises(m1_data.DataError, match="--m2_length=10240 --m2_mode=split"):
    m1_data.job_records(_fake_run(tmp_path / "trim", m2_length=512), "train")
  with pytest.raises(m1_data.DataError, match="no bytes/train records"):
    m1_data.job_records(_fake_run(tmp_path / "empty"), "train")
  # Shards that are not the manifest's (here: one deleted) are named before anything is read.
  out, _, _ = make_bytes_run()
  copy = tmp_path / "damaged"
  shutil.copytree(out, copy)
  victim = sorted((copy / "bytes" / "train").glob("data-*.tfrecord"))[0]
  victim.unlink()
  with pytest.raises(m1_data.DataError, match=f"{victim}: missing"):
    m1_data.job_records(str(copy), "train")
  with pytest.raises(ValueError, match="reset_fraction"):
    m1_data.WindowBatches(m1_data.InMemoryExamples((np.arange(10),)), seq_len=8,
                          batch_size=4, seed=0, reset_fraction=1.5)


def test_importing_the_data_module_imports_no_tensorflow():
  code = ("import sys; import neural_compression.m1.data, neural_compression.m1.export_exact, "
          "neural_compression.m2.train; "
          "print('tensorflow' in sys.modules, 'seqio' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       timeout=120).stdout.split()
  assert out == ["False", "False"]
