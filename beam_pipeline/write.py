"""Deterministic, atomic TFRecord shards, and the run's stats.

Records go to shard sha256(sort_key) mod num_shards; each shard's records are sorted by key before
writing (grouping.GroupSorted, through Beam's shuffle or spill files), so a shard's bytes depend
only on its contents, never on bundling, worker count, runner or shuffle. A shard is written
atomically as its records stream in (output_dir.atomic_writer), so readers never see a partial
file and a retried bundle replaces its own output with identical bytes.
"""
from __future__ import annotations

import hashlib
import json
import posixpath
import struct

import apache_beam as beam
import google_crc32c

from beam_pipeline import grouping as grouping_lib
from beam_pipeline import output_dir as output_dir_lib
from neural_compression import output_layout as layout
from neural_compression import run_manifest as rm

WRITE_NAMESPACE = "write"


def shard_of(sort_key: str, num_shards: int) -> int:
  return int.from_bytes(hashlib.sha256(sort_key.encode()).digest()[:8], "big") % num_shards


_TFRECORD_LENGTH = struct.Struct("<Q")
_TFRECORD_CRC = struct.Struct("<I")
# Records' bytes gathered before one write and one sha256 update.
_WRITE_BATCH_BYTES = 1 << 20
_crc32c = google_crc32c.value  # CRC-32C, as Beam's TFRecord writer computes it (a pin)


def _masked(crc: int) -> int:
  """TFRecord's mask of a CRC-32C (as tfrecordio._TFRecordUtil._masked_crc32c masks it)."""
  return (((crc >> 15) | (crc << 17)) + 0xa282ead8) & 0xffffffff


class _TFRecordWriter:
  """Writes TFRecords (length, its masked CRC-32C, data, the data's masked CRC-32C) to a file,
  about _WRITE_BATCH_BYTES at a time, keeping the sha256 and the count of the bytes written.
  A record's framing and one write per batch: Beam's write_record joined and wrote each record
  through three calls, a third of the shard writer's time."""

  def __init__(self, f):
    self._f = f
    self.sha256 = hashlib.sha256()
    self.bytes = 0
    self._parts = []
    self._held = 0
    self._headers = {}  # a record's length in bytes -> that length packed and its masked CRC

  def write(self, record: bytes) -> None:
    """Adds one record (bytes)."""
    header = self._headers.get(len(record))  # records' lengths repeat: their headers are kept
    if header is None:
      length = _TFRECORD_LENGTH.pack(len(record))
      header = self._headers[len(record)] = length + _TFRECORD_CRC.pack(_masked(_crc32c(length)))
    self._parts += (header, record, _TFRECORD_CRC.pack(_masked(_crc32c(record))))
    self._held += len(record) + 16
    if self._held >= _WRITE_BATCH_BYTES:
      self.flush()

  def flush(self) -> None:
    """Writes the records added so far."""
    if not self._parts:
      return
    data = b"".join(self._parts)
    self._f.write(data)
    self.sha256.update(data)
    self.bytes += len(data)
    self._parts, self._held = [], 0


class _KeyByShardFn(beam.DoFn):
  """((slug, split), (sort_key, record)) -> ((slug, split, shard), (sort_key, record))."""

  def __init__(self, num_shards: int):
    self._num_shards = num_shards

  def process(self, keyed):
    (slug, split), item = keyed
    yield (slug, split, shard_of(item[0], self._num_shards)), item


class _WriteShardFn(beam.DoFn):
  """Writes one shard from its records sorted by key, as they stream in (atomically)."""

  def __init__(self, output_dir: str, num_shards: int):
    self._output_dir = output_dir
    self._num_shards = num_shards

  def process(self, keyed):
    (slug, split, shard), items = keyed
    path = posixpath.join(layout.method_dir(self._output_dir, slug, split),
                          layout.shard_name(shard, self._num_shards))
    count, previous = 0, None
    with output_dir_lib.atomic_writer(path) as f:
      out = _TFRecordWriter(f)
      for key, record in items:  # sorted by key
        if key == previous:
          raise ValueError(f"duplicate record keys in {slug}/{split} shard {shard}: {key}")
        out.write(record)
        previous, count = key, count + 1
      out.flush()
    beam.metrics.Metrics.counter(WRITE_NAMESPACE, "records_written").inc(count)
    beam.metrics.Metrics.counter(WRITE_NAMESPACE, "files_written").inc()
    yield {"path": rm.relative_path(self._output_dir, path),
           "method": slug, "split": split, "records": count, "bytes": out.bytes,
           "sha256": out.sha256.hexdigest()}


class WriteShardedRecords(beam.PTransform):
  """((slug, split), (sort_key, record)) -> written shards; outputs one file-info dict per file.

  `grouping` gathers and sorts each shard's records (grouping.GroupSorted; default: Beam's
  GroupByKey)."""

  def __init__(self, output_dir: str, num_shards: int,
               grouping: "grouping_lib.GroupSorted | None" = None):
    super().__init__()
    if num_shards < 1:
      raise ValueError(f"--num_shards must be >= 1, got {num_shards}")
    self._output_dir = output_dir
    self._num_shards = num_shards
    self._grouping = grouping or grouping_lib.GroupSorted("beam")

  def expand(self, records):
    n = self._num_shards
    return (records
            | "GroupShards" >> self._grouping.keyed_by(_KeyByShardFn(n))
            | "WriteShards" >> beam.ParDo(_WriteShardFn(self._output_dir, n)))


def _sum_dicts(dicts):
  total = {}
  for d in dicts:
    for k, v in d.items():
      total[k] = total.get(k, 0) + v
  return total


def finish_stats(figures: dict, bits_per_token: float) -> dict:
  """Adds the paper's ratios to summed figures (bytes/token, input bits/output bits)."""
  out = dict(figures)
  out["token_compression_ratio"] = figures["input_bytes"] / max(figures["tokens"], 1)
  out["bit_compression_ratio"] = 8 * figures["input_bytes"] / max(
      figures["tokens"] * bits_per_token, 1e-9)
  out["bits_per_token"] = bits_per_token
  return out


class WriteStats(beam.PTransform):
  """Sums per-example figures per (method, split) and writes them as one JSON file."""

  def __init__(self, output_dir: str, bits_per_token: dict[str, float], file_name: str):
    super().__init__()
    self._path = posixpath.join(output_dir, file_name)
    self._bits_per_token = bits_per_token

  def expand(self, stats):
    bits_per_token = self._bits_per_token
    path = self._path

    def write(items):
      table = {}
      for (slug, split), figures in sorted(items):
        table.setdefault(slug, {})[split] = finish_stats(figures, bits_per_token[slug])
      output_dir_lib.write_file(path, json.dumps(table, indent=1, sort_keys=True).encode())
      return table

    return (stats
            | "SumPerMethodSplit" >> beam.CombinePerKey(_sum_dicts)
            | "Gather" >> beam.combiners.ToList()
            | "WriteJson" >> beam.Map(write))


class WriteFileList(beam.PTransform):
  """Writes the written shards' info (path, records, sha256) as one JSON list, sorted by path."""

  def __init__(self, output_dir: str, file_name: str):
    super().__init__()
    self._path = posixpath.join(output_dir, file_name)

  def expand(self, infos):
    path = self._path

    def write(items):
      items = sorted(items, key=lambda i: i["path"])
      output_dir_lib.write_file(path, json.dumps(items, indent=1).encode())
      return items

    return infos | "Gather" >> beam.combiners.ToList() | "WriteJson" >> beam.Map(write)
