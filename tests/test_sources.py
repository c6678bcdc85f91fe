"""Tests for beam_pipeline.sources: real Beam pipelines on the DirectRunner.

Every input file is written by the test itself into tmp_path (no third-party
text). Pipelines are run explicitly so their metrics can be queried.
"""
from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import random
import re
import zlib

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.metrics.metric import MetricsFilter
# Aliased so pytest does not try to collect it as a test class.
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that
from apache_beam.testing.util import equal_to
import hypothesis
from hypothesis import strategies as st
import pytest

from beam_pipeline import sources
from beam_pipeline.sources import streams


def _c4(i: int, text: str | None = None) -> dict:
  return {"text": text if text is not None else f"document {i}\nwith é and 日本",
          "url": f"https://example.com/{i}",
          "timestamp": f"2019-04-{i % 28 + 1:02d}T12:00:00Z"}


def _jsonl_bytes(records) -> bytes:
  return b"".join(json.dumps(r, ensure_ascii=False).encode("utf-8") + b"\n"
                  for r in records)


def _counters(result) -> dict[str, int]:
  """Counter totals in the "sources" namespace, summed over steps."""
  totals: dict[str, int] = {}
  query = result.metrics().query(
      MetricsFilter().with_namespace(sources.SOURCES_NAMESPACE))
  for counter in query["counters"]:
    name = counter.key.metric.name
    totals[name] = totals.get(name, 0) + counter.committed
  return totals


def _without_detail(dead_letter: dict) -> dict:
  """Drops the free-text `detail` after checking that it is there."""
  assert isinstance(dead_letter["detail"], str) and dead_letter["detail"]
  return {k: v for k, v in dead_letter.items() if k != "detail"}


def _run(transform, expected_records, expected_dead_letters=()):
  """Applies `transform` (with_dead_letters=True), checks both outputs, runs.

  Dead letters are compared without their free-text `detail`.

  Returns:
    The counters dict of the finished run.
  """
  p = BeamTestPipeline()
  records, dead = p | transform
  assert_that(records, equal_to(list(expected_records)), label="Records")
  assert_that(dead | beam.Map(_without_detail),
              equal_to(list(expected_dead_letters)), label="DeadLetters")
  result = p.run()
  result.wait_until_finish()
  return _counters(result)


def _assert_bytes_balance(counters):
  assert counters.get("bytes_read", 0) == (
      counters.get("bytes_emitted", 0) + counters.get("bytes_dead_lettered", 0))


# ----------------------------------------------------------------------------
# Stream helpers, no pipeline.


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(
    data=st.binary(max_size=200).map(lambda b: b.replace(b"x", b"\n")),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=6))
def test_line_splitter_matches_split_for_any_chunking(data, cuts):
  bounds = sorted({0, len(data), *[c for c in cuts if c <= len(data)]})
  chunks = [data[a:b] for a, b in zip(bounds, bounds[1:])]
  got = list(streams.LineSplitter().iter_lines(chunks))
  expected = data.split(b"\n")
  if expected and expected[-1] == b"":
    expected.pop()  # A final terminator does not start another line.
  expected = [e[:-1] if e.endswith(b"\r") else e for e in expected]
  assert got == list(enumerate(expected, start=1))


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(
    data=st.binary(max_size=200).map(lambda b: b.replace(b"x", b"\n")),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=6),
    block_bytes=st.integers(min_value=1, max_value=40))
def test_line_blocks_hold_whole_lines_and_are_bounded(data, cuts, block_bytes):
  bounds = sorted({0, len(data), *[c for c in cuts if c <= len(data)]})
  chunks = [data[a:b] for a, b in zip(bounds, bounds[1:])]
  blocks = [bytes(b) for b in streams.LineSplitter().iter_blocks(chunks, block_bytes)]
  assert b"".join(blocks) == data
  for i, block in enumerate(blocks):
    assert block
    assert block.endswith(b"\n") or i == len(blocks) - 1
    assert len(block) <= block_bytes or block.count(b"\n") <= 1  # one long line alone


_COMPRESSORS = {
    CompressionTypes.GZIP: gzip.compress,
    CompressionTypes.BZIP2: bz2.compress,
    CompressionTypes.LZMA: lzma.compress,
    CompressionTypes.DEFLATE: zlib.compress,
}


class _Reader:
  """A minimal raw stream over bytes with a small read size."""

  def __init__(self, data: bytes, step: int = 7):
    self._data, self._pos, self._step = data, 0, step

  def read(self, n):
    del n  # Tiny reads exercise the member/EOF boundaries.
    out = self._data[self._pos:self._pos + self._step]
    self._pos += len(out)
    return out


@pytest.mark.parametrize("compression", sorted(_COMPRESSORS))
def test_decompress_roundtrip_members_and_truncation(compression):
  compress = _COMPRESSORS[compression]
  payload = b"line one\nline two\n" * 50
  # Two concatenated members (zlib/deflate has no member concatenation).
  if compression != CompressionTypes.DEFLATE:
    blob = compress(payload) + compress(payload)
    assert b"".join(streams.iter_decompressed(_Reader(blob), compression)) == (
        payload * 2)
  blob = compress(payload)
  assert b"".join(streams.iter_decompressed(_Reader(blob), compression)) == (
      payload)
  # A zero-byte compressed file is a file truncated to nothing (no compressor writes one).
  with pytest.raises(streams.CorruptStreamError, match="zero-byte"):
    list(streams.iter_decompressed(_Reader(b""), compression))
  with pytest.raises(streams.CorruptStreamError):
    list(streams.iter_decompressed(_Reader(blob[:len(blob) - 3]),
                                    compression))


@pytest.mark.parametrize("compression", sorted(_COMPRESSORS))
def test_decompress_reads_bigger_than_a_piece_and_members_inside_a_piece(compression):
  # Raw reads of 1 MiB are inflated INFLATE_PIECE_BYTES at a time: member boundaries and the
  # stream's end fall inside pieces and reads (random bytes barely compress).
  compress = _COMPRESSORS[compression]
  rng = random.Random(5)
  payloads = [rng.randbytes(n) for n in (700_000, 1, 300_000)]
  members = [compress(x) for x in payloads]
  if compression == CompressionTypes.DEFLATE:
    members, payloads = members[:1], payloads[:1]
  blob = b"".join(members)
  assert len(blob) > 2 * streams.INFLATE_PIECE_BYTES
  for step in (1 << 20, streams.INFLATE_PIECE_BYTES + 1, 100_003):
    assert b"".join(streams.iter_decompressed(_Reader(blob, step), compression)) == (
        b"".join(payloads)), step
    with pytest.raises(streams.CorruptStreamError):
      list(streams.iter_decompressed(_Reader(blob[:-5], step), compression))


@pytest.mark.parametrize("damage", ["crc", "block"])
def test_a_corrupt_stream_bigger_than_a_piece_yields_only_a_prefix_then_fails(damage):
  # What inflates before the damage is found comes out (the reader dead-letters the rest), and
  # how much depends on the fixed pieces, never on the read sizes. A damaged CRC leaves a prefix
  # of the payload; damage inside the deflate data may inflate to wrong bytes first (deflate
  # has no check but the member's CRC at its end).
  rng = random.Random(7)
  payload = b"".join(rng.randbytes(60) + b"\n" for _ in range(20_000))  # 1.2 MB
  blob = bytearray(gzip.compress(payload))
  blob[-6 if damage == "crc" else len(blob) // 2] ^= 0x40
  outs = []
  for step in (1 << 20, 300_001):
    got = []
    with pytest.raises(streams.CorruptStreamError):
      for chunk in streams.iter_decompressed(_Reader(bytes(blob), step), CompressionTypes.GZIP):
        got.append(chunk)
    out = b"".join(got)
    assert len(out) < len(payload)
    if damage == "crc":
      assert payload.startswith(out)
    outs.append(out)
  assert outs[0] == outs[1]


# ----------------------------------------------------------------------------
# ReadC4Json.


def test_c4_json_glob_over_gz_and_plain_shards(tmp_path):
  shards = {
      "c4-train.00000-of-00003.json.gz": [_c4(i) for i in range(0, 4)],
      "c4-train.00001-of-00003.json.gz": [_c4(i) for i in range(4, 9)],
      "c4-train.00002-of-00003.json": [_c4(i) for i in range(9, 11)],
  }
  total_bytes = 0
  for name, records in shards.items():
    data = _jsonl_bytes(records)
    total_bytes += len(data) - len(records)  # Terminators are not counted.
    (tmp_path / name).write_bytes(
        gzip.compress(data) if name.endswith(".gz") else data)
  # Not matched by the glob: must not be read.
  (tmp_path / "c4-validation.00000-of-00001.json").write_bytes(
      _jsonl_bytes([_c4(99)]))
  expected = [r for records in shards.values() for r in records]
  counters = _run(
      sources.ReadC4Json(str(tmp_path / "c4-train.*"), with_dead_letters=True),
      expected)
  assert counters["files_read"] == 3
  assert counters["documents_read"] == len(expected) == counters["lines_read"]
  assert counters["bytes_read"] == counters["bytes_emitted"] == total_bytes
  assert counters.get("dead_letters", 0) == 0
  _assert_bytes_balance(counters)


def test_c4_json_default_usage_returns_only_records(tmp_path):
  path = tmp_path / "c4-train.00000-of-00001.json.gz"
  path.write_bytes(gzip.compress(_jsonl_bytes([_c4(1), _c4(2)])))
  with BeamTestPipeline() as p:
    records = p | sources.ReadC4Json(str(path))
    assert isinstance(records, beam.PCollection)
    assert_that(records, equal_to([_c4(1), _c4(2)]))


def test_c4_json_malformed_lines_are_counted_and_dead_lettered(tmp_path):
  lines = [
      json.dumps(_c4(1)).encode(),                                  # 1 ok
      b'{"text": "unterminated',                                    # 2
      json.dumps({"url": "u", "timestamp": "t"}).encode(),          # 3
      json.dumps({"text": 7, "url": "u", "timestamp": "t"}).encode(),  # 4
      b"",                                                          # 5 empty
      b'["a", "list"]',                                             # 6
      b'{"text": "caf\xe9", "url": "u", "timestamp": "t"}',         # 7 latin-1
      b'{"text": "\\ud800", "url": "u", "timestamp": "t"}',         # 8
      json.dumps({"text": "no url", "timestamp": "t"}).encode(),    # 9
      json.dumps(_c4(2)).encode() + b"\r",                          # 10 ok, CRLF
  ]
  path = tmp_path / "c4-train.00000-of-00001.json"
  path.write_bytes(b"\n".join(lines))  # No final terminator.
  reasons = {2: "invalid_json", 3: "missing_text", 4: "text_not_string",
             6: "not_a_json_object", 7: "invalid_utf8",
             8: "text_not_utf8_encodable", 9: "missing_url"}
  expected_dead = [
      {"path": str(path), "line": n, "reason": reason, "raw": lines[n - 1]}
      for n, reason in reasons.items()]

  p = BeamTestPipeline()
  records, dead = p | sources.ReadC4Json(str(path), with_dead_letters=True)
  assert_that(records, equal_to([_c4(1), _c4(2)]), label="Records")
  # `detail` is free text: check it is there, compare the rest exactly.
  assert_that(dead | beam.Map(_without_detail), equal_to(expected_dead),
              label="DeadLetters")
  result = p.run()
  result.wait_until_finish()
  counters = _counters(result)
  assert counters["malformed_lines"] == counters["dead_letters"] == len(reasons)
  assert counters["empty_lines"] == 1
  assert counters["lines_read"] == len(lines)
  assert counters["documents_read"] == 2
  assert counters["bytes_dead_lettered"] == sum(
      len(lines[n - 1]) for n in reasons)
  assert counters["bytes_read"] == sum(len(l) for l in lines) - 1  # CR.
  _assert_bytes_balance(counters)


def test_corrupt_gz_keeps_prefix_dead_letters_rest_and_job_continues(tmp_path):
  records = [_c4(i, text=f"doc {i} " + "x" * (i * 37 % 300)) for i in range(400)]
  data = _jsonl_bytes(records)
  blob = gzip.compress(data)
  truncated_path = tmp_path / "c4-train.00000-of-00003.json.gz"
  truncated_path.write_bytes(blob[:len(blob) // 2])
  # What any gzip reader can recover from the truncated stream.
  recovered = zlib.decompressobj(zlib.MAX_WBITS | 16).decompress(
      blob[:len(blob) // 2])
  *complete, tail = recovered.split(b"\n")
  assert 0 < len(complete) < len(records)
  not_gzip_path = tmp_path / "c4-train.00001-of-00003.json.gz"
  not_gzip_path.write_bytes(data[:500])  # Plain text with a .gz name.
  good_path = tmp_path / "c4-train.00002-of-00003.json.gz"
  good_path.write_bytes(gzip.compress(_jsonl_bytes([_c4(1000)])))

  p = BeamTestPipeline()
  out, dead = p | sources.ReadC4Json(str(tmp_path / "*.json.gz"),
                                     with_dead_letters=True)
  assert_that(out, equal_to(records[:len(complete)] + [_c4(1000)]),
              label="Records")
  assert_that(
      dead | beam.Map(lambda d: (d["path"], d["line"], d["reason"], d["raw"])),
      equal_to([
          (str(truncated_path), len(complete) + 1, "corrupt_compressed_stream",
           tail),
          (str(not_gzip_path), 1, "corrupt_compressed_stream", b""),
      ]), label="DeadLetters")
  result = p.run()
  result.wait_until_finish()
  counters = _counters(result)
  assert counters["corrupt_files"] == 2
  assert counters["dead_letters"] == 2
  assert counters.get("malformed_lines", 0) == 0
  assert counters["documents_read"] == len(complete) + 1
  assert counters["bytes_dead_lettered"] == len(tail)
  _assert_bytes_balance(counters)


def test_empty_glob_fails_at_construction_naming_the_pattern(tmp_path):
  pattern = str(tmp_path / "c4-train.*.json.gz")
  p = BeamTestPipeline()
  with pytest.raises(sources.NoFilesMatchedError, match=re.escape(pattern)):
    _ = p | sources.ReadC4Json(pattern)
  missing = str(tmp_path / "no-such-dir" / "c4.json")
  with pytest.raises(sources.NoFilesMatchedError, match=re.escape(missing)):
    _ = p | "Missing" >> sources.ReadTextFiles(missing)


def test_empty_glob_fails_at_run_without_validation(tmp_path):
  pattern = str(tmp_path / "c4-train.*.json.gz")
  p = BeamTestPipeline()
  _ = p | sources.ReadC4Json(pattern, validate=False)
  with pytest.raises(Exception, match=re.escape(pattern)):
    p.run().wait_until_finish()


# ----------------------------------------------------------------------------
# ReadJsonl and ReadTextFiles.


def test_jsonl_custom_text_field_and_synthetic_urls(tmp_path):
  lines = [
      {"content": "first", "url": "https://a.example/1", "timestamp": "T1",
       "extra": 1},
      {"content": "second"},
      {"text": "wrong field"},
      {"content": "third", "url": 5},
  ]
  path = tmp_path / "corpus.jsonl.bz2"
  path.write_bytes(bz2.compress(_jsonl_bytes(lines)))
  url = "file://" + os.path.abspath(str(path))
  p = BeamTestPipeline()
  records, dead = p | sources.ReadJsonl(str(path), text_field="content",
                                        with_dead_letters=True)
  assert_that(records, equal_to([
      {"text": "first", "url": "https://a.example/1", "timestamp": "T1"},
      {"text": "second", "url": url + "#L2", "timestamp": ""},
  ]), label="Records")
  assert_that(dead | beam.Map(lambda d: (d["line"], d["reason"])),
              equal_to([(3, "missing_content"), (4, "url_not_string")]),
              label="DeadLetters")
  result = p.run()
  result.wait_until_finish()
  counters = _counters(result)
  assert counters["malformed_lines"] == 2
  _assert_bytes_balance(counters)


def test_text_files_whole_file_documents_and_invalid_utf8(tmp_path):
  good = "Line one.\r\nLine two: é.\n\n".encode("utf-8")
  bad = b"valid start \xff\xfe then bytes that are not UTF-8\n"
  (tmp_path / "a.txt").write_bytes(good)
  (tmp_path / "b.txt.gz").write_bytes(gzip.compress(bad))
  (tmp_path / "c.txt").write_bytes(b"")
  # A truncated whole-file document is rejected whole, never half-emitted.
  truncated = gzip.compress(good * 50)[:-20]
  (tmp_path / "d.txt.gz").write_bytes(truncated)
  partial = zlib.decompressobj(zlib.MAX_WBITS | 16).decompress(truncated)
  base = "file://" + os.path.abspath(str(tmp_path))
  counters = _run(
      sources.ReadTextFiles(str(tmp_path / "*.txt*"), with_dead_letters=True),
      [{"text": good.decode("utf-8"), "url": base + "/a.txt", "timestamp": ""}],
      [{"path": str(tmp_path / "b.txt.gz"), "line": 1,
        "reason": "invalid_utf8", "raw": bad},
       {"path": str(tmp_path / "d.txt.gz"), "line": 1,
        "reason": "corrupt_compressed_stream", "raw": partial}])
  assert counters["malformed_files"] == 1
  assert counters["corrupt_files"] == 1
  assert counters["bytes_dead_lettered"] == len(bad) + len(partial)
  assert counters["empty_lines"] == 1  # c.txt
  assert counters["bytes_emitted"] == len(good)
  _assert_bytes_balance(counters)

  counters = _run(
      sources.ReadTextFiles(str(tmp_path / "b.txt.gz"), invalid_utf8="replace",
                            with_dead_letters=True),
      [{"text": bad.decode("utf-8", errors="replace"),
        "url": base + "/b.txt.gz", "timestamp": ""}])
  assert counters["invalid_utf8_replaced"] == 1
  assert counters["bytes_emitted"] == len(bad)


def test_text_files_one_document_per_line(tmp_path):
  path = tmp_path / "lines.txt.xz"
  path.write_bytes(lzma.compress(b"alpha\r\n\nbeta \xe2\x9c\x93\n\xc3(\ngamma"))
  url = "file://" + os.path.abspath(str(path))
  counters = _run(
      sources.ReadTextFiles(str(path), lines=True, with_dead_letters=True),
      [{"text": "alpha", "url": url + "#L1", "timestamp": ""},
       {"text": "beta ✓", "url": url + "#L3", "timestamp": ""},
       {"text": "gamma", "url": url + "#L5", "timestamp": ""}],
      [{"path": str(path), "line": 4, "reason": "invalid_utf8",
        "raw": b"\xc3("}])
  assert counters["lines_read"] == 5
  assert counters["empty_lines"] == 1
  assert counters["malformed_lines"] == 1
  _assert_bytes_balance(counters)


# ----------------------------------------------------------------------------
# ReadDefaultCorpus and ReadTfdsC4.


def test_default_corpus_yields_249_nonempty_documents():

  def check(records):
    assert len(records) == 249
    assert all(set(r) == {"text", "url", "timestamp"} for r in records)
    assert all(r["text"].strip() for r in records)
    assert len({r["url"] for r in records}) == 249

  p = BeamTestPipeline()
  records, dead = p | sources.ReadDefaultCorpus(with_dead_letters=True)
  assert_that(records, check, label="Records")
  assert_that(dead, equal_to([]), label="DeadLetters")
  result = p.run()
  result.wait_until_finish()
  assert _counters(result)["documents_read"] == 249


def _write_tiny_tfds_c4(data_dir, records_per_shard):
  """Writes a prepared TFDS c4/en:3.1.0 in the TFDS on-disk layout."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  dataset_dir = os.path.join(data_dir, "c4", "en", "3.1.0")
  os.makedirs(dataset_dir)
  # C4's features: three Text features.
  features = tfds.features.FeaturesDict({
      "text": tfds.features.Text(), "url": tfds.features.Text(),
      "timestamp": tfds.features.Text()})
  n = len(records_per_shard)
  for shard, records in enumerate(records_per_shard):
    path = os.path.join(dataset_dir,
                        f"c4-train.tfrecord-{shard:05d}-of-{n:05d}")
    with tf.io.TFRecordWriter(path) as writer:
      for record in records:
        writer.write(features.serialize_example(record))
  tfds.folder_dataset.write_metadata(
      data_dir=dataset_dir, features=features, split_infos=None,
      filename_template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}")


def test_tfds_c4_reader_on_tiny_prepared_dataset(tmp_path):
  shards = [[_c4(i) for i in range(3)], [_c4(i) for i in range(3, 5)]]
  _write_tiny_tfds_c4(str(tmp_path), shards)
  counters = _run(
      sources.ReadTfdsC4(str(tmp_path), "train", with_dead_letters=True),
      [r for shard in shards for r in shard])
  assert counters["documents_read"] == 5
  with pytest.raises(sources.NoFilesMatchedError, match="validation"):
    _ = BeamTestPipeline() | sources.ReadTfdsC4(str(tmp_path), "validation")


# ----------------------------------------------------------------------------
# read_documents.


def test_read_documents_dispatches_by_flag(tmp_path):
  path = tmp_path / "c4-train.00000-of-00001.json"
  path.write_bytes(_jsonl_bytes([_c4(1)]))
  p = BeamTestPipeline()
  records, dead = sources.read_documents(p, "c4_json", str(path),
                                         with_dead_letters=True)
  as_jsonl = sources.read_documents(p, "jsonl", str(path))
  as_text = sources.read_documents(p, "text", str(path), lines=True)
  assert_that(records, equal_to([_c4(1)]), label="C4")
  assert_that(dead, equal_to([]), label="Dead")
  assert_that(as_jsonl, equal_to([_c4(1)]), label="Jsonl")
  assert_that(as_text | beam.Map(lambda r: json.loads(r["text"])),
              equal_to([_c4(1)]), label="Text")
  p.run().wait_until_finish()

  with pytest.raises(ValueError, match="unknown source"):
    sources.read_documents(BeamTestPipeline(), "parquet", str(path))
  with pytest.raises(ValueError, match="needs a pattern"):
    sources.read_documents(BeamTestPipeline(), "c4_json", None)
  with pytest.raises(ValueError, match="takes no pattern"):
    sources.read_documents(BeamTestPipeline(), "default", str(path))
  assert set(sources.SOURCES) == {"default", "c4_json", "tfds", "jsonl", "text"}


@pytest.mark.parametrize("reader", ["c4", "jsonl"])
def test_deeply_nested_lines_are_one_dead_letter_not_a_failed_job(tmp_path, reader):
  # json parses nesting recursively: a line nested ~1,000 deep raised RecursionError, which
  # failed the job, at a depth that depended on the runner's own stack. Past a fixed bound it is
  # a dead letter; brackets inside strings are text, however many.
  from beam_pipeline.sources import common
  limit = common.MAX_JSON_NESTING
  fields = {"text": "t", "url": "u", "timestamp": "t"}

  def line(depth, text="t"):
    body = json.dumps({**fields, "text": text})[:-1]
    return (body + ', "n": ' + "[" * depth + "]" * depth + "}").encode()

  # The object itself is one level: `n` nested limit - 1 deep is the bound, limit deep beyond it.
  lines = [line(limit - 1), line(limit), line(100_000), line(3, text="[{" * 5000)]
  path = tmp_path / "c4-train.00000-of-00001.json"
  path.write_bytes(b"\n".join(lines))
  read = (sources.ReadC4Json(str(path), with_dead_letters=True) if reader == "c4" else
          sources.ReadJsonl(str(path), with_dead_letters=True))
  with BeamTestPipeline() as p:
    records, dead = p | read
    assert_that(records | beam.Map(lambda r: r["text"][:2]), equal_to(["t", "[{"]),
                label="Records")
    assert_that(dead | beam.Map(lambda d: (d["line"], d["reason"], "nested" in d["detail"])),
                equal_to([(2, "invalid_json", True), (3, "invalid_json", True)]),
                label="DeadLetters")


def test_a_key_that_collides_with_url_in_a_key_cache_is_not_the_url():
  # orjson (tried for speed, reverted) caches keys by their xxh3 hash alone: this 64-byte key
  # hashes as "url" and came back as "url" once "url" had been read. json compares keys.
  from beam_pipeline.sources import c4_json
  from beam_pipeline.sources import common
  colliding = "tTELAYOxpu7lxfvFY4gfGhV77TP32Kk8pjliZ6qQPvwrnjUbspjLdr7cj99FoBEN"
  c4_json._parse_c4_line("p", 1, json.dumps(_c4(1)).encode())  # pylint: disable=protected-access
  line = json.dumps({"text": "t", colliding: "http://elsewhere", "timestamp": "t"}).encode()
  with pytest.raises(common.Rejected) as rejected:
    c4_json._parse_c4_line("p", 2, line)  # pylint: disable=protected-access
  assert rejected.value.reason == "missing_url"


def _read_units(fn, method, chunks, fail: bool):
  """What `fn`'s line reader `method` emits for `chunks` (then a corrupt stream if `fail`), as
  (tag, value) pairs, and its counts."""
  def stream():
    yield from chunks
    if fail:
      raise streams.CorruptStreamError("damaged here")
  out = [(getattr(o, "tag", "record"), getattr(o, "value", o))
         for o in getattr(fn, method)("f.json", stream())]
  return out, dict(fn._tally.counts)  # pylint: disable=protected-access


_C4_LINES = st.one_of(
    st.builds(lambda i, t: json.dumps(_c4(i, t), ensure_ascii=i % 2 == 0).encode(),
              st.integers(0, 99), st.text(max_size=30)),
    st.sampled_from([b"", b"\r", b"{}", b'{"text": 1, "url": "u", "timestamp": "t"}',
                     b'{"text": "t", "url": "u"}', b'{"text": "\\ud800", "url": "u", '
                     b'"timestamp": "t"}', b'{"text": "\xff", "url": "u", "timestamp": "t"}',
                     b"not json", b'{"text": "a", "text": "b", "url": "u", "timestamp": "t"}']))


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(lines=st.lists(_C4_LINES, max_size=12),
                  cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=6),
                  crlf=st.booleans(), final_newline=st.booleans(), fail=st.booleans(),
                  reader=st.sampled_from(["c4", "jsonl"]))
def test_the_scanned_reader_emits_and_counts_what_the_line_parser_does(
    lines, cuts, crlf, final_newline, fail, reader):
  from beam_pipeline.sources import files
  data = (b"\r\n" if crlf else b"\n").join(lines) + (b"\n" if final_newline and lines else b"")
  bounds = sorted({0, len(data), *[c for c in cuts if c <= len(data)]})
  chunks = [data[a:b] for a, b in zip(bounds, bounds[1:])] + [b""]  # an empty chunk is no line
  read = (sources.ReadC4Json("x", validate=False) if reader == "c4" else
          sources.ReadJsonl("x", validate=False))
  scanned = read._make_fn()  # pylint: disable=protected-access
  assert scanned._scanned is not None  # pylint: disable=protected-access
  plain = files.ReadFileFn(scanned._parse, per_line=True)  # pylint: disable=protected-access
  assert (_read_units(scanned, "_process_scanned_lines", chunks, fail)
          == _read_units(plain, "_process_lines", chunks, fail))


def _text_encoded(units):
  out, counts = units
  return [(tag, {**value, "text": value["text"].encode("utf-8")} if tag == "record" else value)
          for tag, value in out], counts


@hypothesis.settings(max_examples=100, deadline=None)
@hypothesis.given(lines=st.lists(_C4_LINES, max_size=12),
                  cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=6),
                  fail=st.booleans(), reader=st.sampled_from(["c4", "jsonl"]))
def test_utf8_text_gives_the_texts_utf8_bytes_and_nothing_else_changes(lines, cuts, fail, reader):
  from beam_pipeline.sources import files
  data = b"\n".join(lines)
  bounds = sorted({0, len(data), *[c for c in cuts if c <= len(data)]})
  chunks = [data[a:b] for a, b in zip(bounds, bounds[1:])]
  make = ((lambda **kw: sources.ReadC4Json("x", validate=False, **kw)) if reader == "c4" else
          (lambda **kw: sources.ReadJsonl("x", validate=False, **kw)))
  # pylint: disable=protected-access
  scanned_bytes = make(utf8_text=True)._make_fn()
  plain_str = make()._make_fn()
  plain_bytes = files.ReadFileFn(plain_str._parse, per_line=True, utf8_text=True)
  want = _text_encoded(_read_units(plain_str, "_process_lines", chunks, fail))
  assert _read_units(scanned_bytes, "_process_scanned_lines", chunks, fail) == want
  assert _read_units(plain_bytes, "_process_lines", chunks, fail) == want
  assert all(type(v["text"]) is bytes for t, v in want[0] if t == "record")  # noqa: E721


def test_a_jsonl_reader_whose_fields_the_scanner_cannot_look_up_parses_every_line():
  # The scanner compares raw key bytes: a text field named like the url field, or one with a
  # quote or non-ASCII, would read wrong, so such a reader keeps to json.
  # pylint: disable=protected-access
  for text_field in ("url", 'a"b', "t\u00e9xt", "a\\b"):
    assert sources.ReadJsonl("x", text_field, validate=False)._make_fn()._scanned is None
  assert sources.ReadJsonl("x", "body", validate=False)._make_fn()._scanned is not None


@hypothesis.settings(max_examples=100, deadline=None)
@hypothesis.given(lines=st.lists(_C4_LINES, max_size=12),
                  cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=6),
                  fail=st.booleans(), reader=st.sampled_from(["c4", "jsonl"]),
                  utf8_text=st.booleans())
def test_document_blocks_hold_the_records_in_order_and_nothing_else_changes(
    lines, cuts, fail, reader, utf8_text):
  # With document_blocks the scanner's records come as DocumentBlocks of consecutive records,
  # cut where a line goes to the parser (whose records come alone) and at the scanner's blocks:
  # flattened, the same records, dead letters, order and counts as one record at a time.
  data = b"\n".join(lines)
  bounds = sorted({0, len(data), *[c for c in cuts if c <= len(data)]})
  chunks = [data[a:b] for a, b in zip(bounds, bounds[1:])]
  make = ((lambda **kw: sources.ReadC4Json("x", validate=False, **kw)) if reader == "c4" else
          (lambda **kw: sources.ReadJsonl("x", validate=False, **kw)))
  # pylint: disable=protected-access
  blocks, counts = _read_units(make(utf8_text=utf8_text, document_blocks=True)._make_fn(),
                               "_process_scanned_lines", chunks, fail)
  want = _read_units(make(utf8_text=utf8_text)._make_fn(), "_process_scanned_lines", chunks,
                     fail)
  assert all(v for _, v in blocks if type(v) is sources.DocumentBlock)  # noqa: E721
  flat = [(t, r) for t, v in blocks
          for r in (v if type(v) is sources.DocumentBlock else [v])]  # noqa: E721
  assert (flat, counts) == want


def test_document_blocks_gather_consecutive_scanned_lines():
  good = [json.dumps(_c4(i, f"text {i}")).encode() for i in range(6)]
  data = b"\n".join(good[:3] + [b"not json"] + good[3:]) + b"\n"
  fn = sources.ReadC4Json("x", validate=False, utf8_text=True,
                          document_blocks=True)._make_fn()  # pylint: disable=protected-access
  out, counts = _read_units(fn, "_process_scanned_lines", [data], fail=False)
  assert [t for t, _ in out] == ["record", "dead_letter", "record"]
  assert [[r["text"] for r in v] for t, v in out if t == "record"] == [
      [b"text 0", b"text 1", b"text 2"], [b"text 3", b"text 4", b"text 5"]]
  assert counts["documents_read"] == 6 and counts["dead_letters"] == 1
