"""SeqIO tasks over real Beam-job output: names, decoding to the source, batches, errors.

The data is made here by running the real pipeline in-process on a tiny generated corpus
(`make_test_run`, shared with the vocabulary and metric tests), and the ground truth is rebuilt
from the corpus the way the job cuts it (sorted by sha256(url) + sha256(text), runs of
DOCS_PER_RUN documents, EXAMPLE_BYTES-symbol examples), and cross-checked against the `bytes`
method's records.
"""
from __future__ import annotations

import atexit
import functools
import hashlib
import json
import pathlib
import shutil
import tempfile

import numpy as np
import pytest
import seqio
import tensorflow as tf

import seqio_tasks
from neural_compression import corpus
from neural_compression import examples as ex
from neural_compression import methods
from neural_compression import output_layout as layout
from seqio_tasks import data
from seqio_tasks import tasks
from seqio_tasks import vocabularies
from tests import pipeline_test_corpus as corpus_gen

# The methods the tests run; spm needs a vocabulary the tiny corpus can fill (>= 312 pieces).
TEST_METHODS = ("static_equal_info_ac:b16:v65k", "static_equal_info_ac:b32:v256",
                "static_ac:v256", "gzip:v256", "bytes", "spm:v400")
DOCS_PER_RUN = 6
EXAMPLE_BYTES = 2048
M2_LENGTH = 128
VALIDATION_PERCENT = 25


def job_args(pattern: str, out: str, method_list, *extra) -> list[str]:
  return ["--source=c4_json", f"--input={pattern}", f"--output_dir={out}",
          f"--methods={','.join(method_list)}", f"--docs_per_run={DOCS_PER_RUN}",
          f"--example_bytes={EXAMPLE_BYTES}", "--examples_per_run=0", "--num_shards=2",
          f"--validation_percent={VALIDATION_PERCENT}", f"--m2_length={M2_LENGTH}",
          "--batch_size=8", *extra]


def _tmpdir() -> pathlib.Path:
  path = pathlib.Path(tempfile.mkdtemp(prefix="seqio_tasks_test_"))
  atexit.register(shutil.rmtree, path, ignore_errors=True)
  return path


@functools.lru_cache(maxsize=None)
def make_test_run():
  """Runs the Beam job once per test session; returns (output_dir, documents).

  Cached in-process (not a pytest fixture) so the three seqio test modules share one run.
  """
  from beam_pipeline import pipeline  # the tests, not seqio_tasks, may use the job
  root = _tmpdir()
  docs = corpus_gen.make_documents(24, seed=3, mean_words=120)
  pattern = corpus_gen.write_c4_shards(root / "c4", docs)
  out = root / "run"
  pipeline.run(job_args(pattern, str(out), TEST_METHODS))
  for method in TEST_METHODS:
    tasks.register_method_task(method)  # spm:v400 and b32:v256 are not registered at import
  return str(out), docs


def source_examples(docs) -> dict[str, np.ndarray]:
  """example_id -> symbols, cut as beam_pipeline.runs does (run_buckets=1, URL-hash split)."""
  by_split: dict[str, list] = {}
  for doc in docs:
    text = doc["text"].encode("utf-8")
    split = corpus.split_of_url(doc["url"], VALIDATION_PERCENT)
    key = hashlib.sha256(doc["url"].encode()).digest() + hashlib.sha256(text).digest()
    by_split.setdefault(split, []).append((key, text))
  out = {}
  for split, items in by_split.items():
    texts = [t for _, t in sorted(items)]
    for run, start in enumerate(range(0, len(texts), DOCS_PER_RUN)):
      pieces = ex.cut_examples(ex.run_symbols(texts[start:start + DOCS_PER_RUN]), EXAMPLE_BYTES)
      for i, symbols in enumerate(pieces):
        out[f"{split}-{0:06d}-{run:06d}-{i:05d}"] = symbols
  return out


def task_examples(method: str, split: str) -> list[dict]:
  task = seqio.get_mixture_or_task(seqio_tasks.task_name(method))
  ds = task.get_dataset(sequence_length={"targets": M2_LENGTH}, split=split, shuffle=False)
  return list(ds.as_numpy_iterator())


def test_documented_task_names_are_registered():
  expected = ["c4_equal_info_ac_b16_v65k", "c4_ac_v256", "c4_static_ac_v256", "c4_gzip_v256",
              "c4_bytes", "c4_spm_v32k", "c4_static_equal_info_ac_b16_v65k",
              "c4_equal_info_ac_b16_v65k_paper"]
  expected += ["c4_" + methods.parse_method(m).slug for m in methods.PAPER_METHODS]
  registered = set(seqio.TaskRegistry.names())
  assert set(expected) <= registered
  for name in expected:
    task = seqio.get_mixture_or_task(name)
    assert isinstance(task.source, seqio.TFExampleDataSource)
    assert sorted(task.splits) == ["train", "validation"]
    feature = task.output_features["targets"]
    assert (feature.dtype, feature.add_eos, feature.rank) == (tf.int32, False, 1)
  assert seqio_tasks.task_name("equal_info_ac:b16:v65k") == "c4_equal_info_ac_b16_v65k"


@pytest.mark.parametrize("method", TEST_METHODS)
def test_examples_decode_to_the_exact_source_slice(run_dir, method):
  _, docs = make_test_run()
  sources = source_examples(docs)
  vocab = seqio_tasks.vocabulary_for(method)
  manifest = data.read_manifest(run_dir)
  slug = methods.parse_method(method).slug
  for split in ("train", "validation"):
    examples = task_examples(method, split)
    assert len(examples) == manifest["records"][f"{slug}/{split}"] > 0
    for e in examples:
      source = sources[e["example_id"].decode()]
      expected = source[:e["raw_bytes"]]
      assert e["targets"].dtype == np.int32
      assert e["targets"].min() >= vocabularies.ID_OFFSET
      assert e["targets"].max() < vocab.vocab_size
      assert len(e["targets"]) <= M2_LENGTH
      np.testing.assert_array_equal(vocab.decode_symbols(e["targets"], strict=True), expected)
      assert vocab.decode(e["targets"].tolist()) == vocabularies.symbols_to_text(expected)
    # The ids are the stored raw tokens shifted by 3, record for record.
    files = layout.file_pattern(run_dir, slug, split)
    raw = {}
    for record in tf.data.TFRecordDataset(tf.io.gfile.glob(files)).as_numpy_iterator():
      f = tf.train.Example.FromString(record).features.feature
      raw[f[layout.EXAMPLE_ID].bytes_list.value[0].decode()] = np.asarray(
          f[layout.TARGETS].int64_list.value)
    for e in examples:
      np.testing.assert_array_equal(e["targets"], raw[e["example_id"].decode()] + 3)


def test_bytes_records_agree_with_the_rebuilt_source(run_dir):
  # The ground truth itself is checked against an independent one: the `bytes` method.
  _, docs = make_test_run()
  sources = source_examples(docs)
  seen = set()
  for split in ("train", "validation"):
    for e in task_examples("bytes", split):
      seen.add(e["example_id"].decode())
      np.testing.assert_array_equal(e["targets"] - 3, sources[e["example_id"].decode()][:M2_LENGTH])
  assert seen == set(sources)


@pytest.mark.parametrize("method", ["static_equal_info_ac:b16:v65k", "gzip:v256", "spm:v400"])
@pytest.mark.parametrize("pack", [True, False])
def test_decoder_feature_converter_batches(run_dir, method, pack):
  task = seqio.get_mixture_or_task(seqio_tasks.task_name(method))
  vocab = task.output_features["targets"].vocabulary
  length = 2 * M2_LENGTH  # room for packing two examples into a row
  ds = task.get_dataset(sequence_length={"targets": length}, split="train", shuffle=False)
  total_tokens = sum(len(e["targets"]) for e in ds.as_numpy_iterator())
  converted = seqio.DecoderFeatureConverter(pack=pack)(ds, {"targets": length})
  batches = list(converted.batch(4).as_numpy_iterator())
  keys = {"decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights"}
  if pack:
    keys |= {"decoder_segment_ids", "decoder_positions"}
  weight_sum = 0
  for b in batches:
    assert set(b) == keys
    for value in b.values():
      assert value.dtype == np.int32 and value.shape[1:] == (length,)
      assert value.shape[0] <= 4
    targets = b["decoder_target_tokens"]
    assert targets.max() < vocab.vocab_size and targets.min() >= 0
    # Only PAD is below the offset: the data has no EOS and never UNK.
    assert not np.isin(targets, [vocabularies.EOS_ID, vocabularies.UNK_ID]).any()
    np.testing.assert_array_equal(b["decoder_loss_weights"], (targets > 0).astype(np.int32))
    weight_sum += int(b["decoder_loss_weights"].sum())
  assert weight_sum == total_tokens
  if pack:
    assert max(int(b["decoder_segment_ids"].max()) for b in batches) >= 2


def test_records_longer_than_the_feature_length_are_refused(run_dir):
  # seqio would trim them, and the trimmed tokens would not cover raw_bytes any more.
  task = seqio.get_mixture_or_task("c4_bytes")
  ds = task.get_dataset({"targets": M2_LENGTH // 2}, split="train", shuffle=False)
  with pytest.raises(tf.errors.InvalidArgumentError, match="--m2_length"):
    list(ds.as_numpy_iterator())


def test_mixtures_build(run_dir):
  everything = seqio.get_mixture_or_task("c4_all_methods")
  assert {t.name for t in everything.tasks} == set(tasks.TASK_NAMES)
  baselines = seqio.get_mixture_or_task("c4_paper_baselines")
  assert {t.name for t in baselines.tasks} == {
      "c4_bytes", "c4_spm_v32k", "c4_ac_v256", "c4_ac_v65k", "c4_static_ac_v256",
      "c4_static_ac_v65k", "c4_gzip_v256", "c4_gzip_v65k"}
  paper = seqio.get_mixture_or_task("c4_paper_methods")
  assert len(paper.tasks) == len(methods.PAPER_METHODS)
  # A mixture of every test task builds; reading it as one dataset is refused, because the
  # token spaces differ (seqio checks that a mixture's vocabularies agree).
  name = "c4_seqio_test_all"
  if name not in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.add(name, [seqio_tasks.task_name(m) for m in TEST_METHODS],
                              default_rate=1.0)
  mixture = seqio.get_mixture_or_task(name)
  assert len(mixture.tasks) == len(TEST_METHODS)
  with pytest.raises(ValueError, match="same vocabulary"):
    mixture.get_dataset({"targets": M2_LENGTH}, split="train")
  # One method's task mixes with itself (e.g. under a different rate) and reads.
  single = "c4_seqio_test_single"
  if single not in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.add(single, [(seqio_tasks.task_name("gzip:v256"), 1.0)])
  ds = seqio.get_mixture_or_task(single).get_dataset({"targets": M2_LENGTH}, split="validation",
                                                     shuffle=False, num_epochs=1)
  assert len(list(ds.as_numpy_iterator())) > 0


def test_missing_run_names_the_directory_and_the_command(tmp_path):
  empty = str(tmp_path / "nothing_here")
  previous = seqio_tasks.set_data_dir(empty)
  try:
    task = seqio.get_mixture_or_task("c4_static_ac_v256")
    with pytest.raises(seqio_tasks.MissingDataError) as e:
      task.get_dataset({"targets": 512}, split="train")
    message = str(e.value)
    assert empty in message
    assert f"python -m beam_pipeline --output_dir={empty} --methods=static_ac:v256" in message
    assert task.num_input_examples("train") is None
    with pytest.raises(seqio_tasks.MissingDataError, match="manifest.json"):
      seqio_tasks.vocabulary_for("static_ac:v256", data_dir=empty).decode([3, 4, 5])
  finally:
    seqio_tasks.set_data_dir(previous)


def test_method_missing_from_the_run_names_the_command(run_dir):
  task = seqio.get_mixture_or_task("c4_gzip_v65k")
  with pytest.raises(seqio_tasks.MissingDataError) as e:
    task.get_dataset({"targets": 512}, split="validation")
  assert f"python -m beam_pipeline --output_dir={run_dir} --methods=gzip:v65k" in str(e.value)
  assert "gzip:v256" in str(e.value)  # what the run does have


def test_incomplete_run_without_manifest_is_refused(run_dir, tmp_path):
  copy = tmp_path / "copy"
  shutil.copytree(run_dir, copy)
  (copy / layout.MANIFEST).unlink()  # e.g. a job still running, or one that failed
  seqio_tasks.set_data_dir(str(copy))
  with pytest.raises(seqio_tasks.MissingDataError, match="manifest.json"):
    seqio.get_mixture_or_task("c4_bytes").get_dataset({"targets": 512}, split="train")


def test_shards_missing_from_a_complete_run_are_refused(run_dir, tmp_path):
  copy = tmp_path / "copy"
  shutil.copytree(run_dir, copy)
  sorted((copy / "bytes" / "train").glob("data-*.tfrecord"))[0].unlink()
  seqio_tasks.set_data_dir(str(copy))
  with pytest.raises(seqio_tasks.DamagedDataError, match="changed after the run"):
    seqio.get_mixture_or_task("c4_bytes").get_dataset({"targets": 512}, split="train")
  # Other splits and methods of the run still read.
  task = seqio.get_mixture_or_task("c4_bytes")
  assert list(task.get_dataset({"targets": 512}, split="validation").as_numpy_iterator())


def test_data_dir_resolution_order(monkeypatch, run_dir):
  seqio_tasks.set_data_dir(None)
  monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
  assert seqio_tasks.get_data_dir() == "./output"
  monkeypatch.setenv(data.DATA_DIR_ENV, run_dir)
  assert seqio_tasks.get_data_dir() == run_dir
  # Resolved when read: the task registered at import reads the env var's run now.
  assert seqio.get_mixture_or_task("c4_bytes").num_input_examples("train") > 0
  seqio_tasks.set_data_dir("/elsewhere")
  assert seqio_tasks.get_data_dir() == "/elsewhere"
  assert "/elsewhere/bytes/train/data-*.tfrecord" in str(
      seqio.get_mixture_or_task("c4_bytes").source._split_to_filepattern["train"])  # pylint: disable=protected-access


# --- M1 methods: only once the exact engine and its test checkpoints exist ---------------------
@functools.lru_cache(maxsize=None)
def make_m1_run():
  pytest.importorskip("neural_compression.m1.engine")
  m1_checkpoints = pytest.importorskip("tests.m1_test_checkpoints")
  from beam_pipeline import pipeline
  root = _tmpdir()
  checkpoint = m1_checkpoints.make_checkpoint(root / "m1")
  docs = corpus_gen.make_documents(6, seed=5, mean_words=50)
  pattern = corpus_gen.write_c4_shards(root / "c4", docs)
  out = root / "run"
  pipeline.run(job_args(pattern, str(out), ["equal_info_ac:b16:v65k", "ac:v256"],
                        f"--m1_checkpoint={checkpoint}"))
  return str(out), docs, str(checkpoint), root


@pytest.mark.parametrize("method", ["equal_info_ac:b16:v65k", "ac:v256"])
def test_m1_examples_decode_to_the_source(monkeypatch, method):
  out, docs, checkpoint, _ = make_m1_run()
  monkeypatch.setenv(data.M1_CHECKPOINT_ENV, checkpoint)
  previous = seqio_tasks.set_data_dir(out)
  try:
    sources = source_examples(docs)
    task = seqio.get_mixture_or_task(seqio_tasks.task_name(method))
    vocab = vocabularies.M1ArithmeticVocabulary(method)  # fresh: picks up the env var
    assert vocab == task.output_features["targets"].vocabulary
    count = 0
    for split in ("train", "validation"):
      ds = task.get_dataset({"targets": M2_LENGTH}, split=split, shuffle=False)
      for e in ds.as_numpy_iterator():
        expected = sources[e["example_id"].decode()][:e["raw_bytes"]]
        np.testing.assert_array_equal(vocab.decode_symbols(e["targets"], strict=True), expected)
        count += 1
    assert count > 0
  finally:
    seqio_tasks.set_data_dir(previous)


def test_m1_vocabulary_decodes_with_the_runs_recorded_attention_window(tmp_path):
  out, docs, checkpoint, _ = make_m1_run()
  manifest_path = pathlib.Path(out) / "manifest.json"
  assert json.loads(manifest_path.read_text())["m1_context"] == 1024  # the test M1 records none
  sources = source_examples(docs)
  ds = tf.data.TFRecordDataset(sorted(str(f) for f in
                                      (pathlib.Path(out) / "ac_v256" / "train").glob("*.tfrecord")))
  records = [tf.train.Example.FromString(r.numpy()) for r in ds]
  record = max(records, key=lambda r: r.features.feature["raw_bytes"].int64_list.value[0])
  targets = [t + 3 for t in record.features.feature["targets"].int64_list.value]  # model ids
  expected = sources[record.features.feature["example_id"].bytes_list.value[0].decode()]
  expected = expected[:record.features.feature["raw_bytes"].int64_list.value[0]]
  assert len(expected) > 100
  # A copy of the run whose manifest claims a 40-symbol window: the vocabulary must use it (and
  # so decode AC's long example differently), not the checkpoint's own.
  copy = tmp_path / "run"
  shutil.copytree(out, copy)
  manifest = json.loads(manifest_path.read_text())
  manifest["m1_context"] = 40
  for entry in manifest["files"] + manifest["run_files"]:
    if "path" in entry and str(entry["path"]).startswith(out):
      entry["path"] = str(copy) + entry["path"][len(out):]
  (copy / "manifest.json").write_text(json.dumps(manifest))
  right = vocabularies.M1ArithmeticVocabulary("ac:v256", data_dir=out, m1_checkpoint=checkpoint)
  np.testing.assert_array_equal(right.decode_symbols(targets, strict=True), expected)
  narrow = vocabularies.M1ArithmeticVocabulary("ac:v256", data_dir=str(copy),
                                               m1_checkpoint=checkpoint)
  assert narrow.compressor.model.engine.max_context == 40
  assert right.compressor.model.engine.max_context == 1024
  assert not np.array_equal(narrow.decode_symbols(targets), expected)


def test_m1_vocabulary_refuses_another_checkpoint():
  out, _, _, root = make_m1_run()
  m1_checkpoints = pytest.importorskip("tests.m1_test_checkpoints")
  other = m1_checkpoints.make_checkpoint(root / "other_m1", seed=11)
  vocab = vocabularies.M1ArithmeticVocabulary("ac:v256", data_dir=out, m1_checkpoint=str(other))
  with pytest.raises(seqio_tasks.MissingDataError, match="m1_checksum"):
    vocab.decode_symbols([3, 4, 5])
