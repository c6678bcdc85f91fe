"""Where the Beam job writes, and the schema of its records: shared by the job and SeqIO.

  <output_dir>/<method slug>/<split>/data-<shard>-of-<shards>.tfrecord   tf.train.Example records
  <output_dir>/stats.json     per method and split: bytes, tokens, ratios, windows, M2 examples
  <output_dir>/manifest.json  written last: flags, M1 checksum, sha256 and record count per file

A run is complete only once manifest.json exists; readers check for it.
"""
from __future__ import annotations

import posixpath

# Feature names of every record (tf.train.Example).
TARGETS = "targets"  # int64 list: raw token values in [0, 2**N) (or the method's vocab)
RAW_BYTES = "raw_bytes"  # int64: source symbols (bytes, EOS included) the tokens cover
EXAMPLE_ID = "example_id"  # bytes: '<split>-<bucket>-<run>-<example>'
CHUNK = "chunk"  # int64: piece index within the example (split mode), 0 for trim

MANIFEST = "manifest.json"
STATS = "stats.json"


def method_dir(output_dir: str, slug: str, split: str) -> str:
  """The directory holding one method's records of one split."""
  return posixpath.join(output_dir, slug, split)


def shard_name(shard: int, num_shards: int) -> str:
  return f"data-{shard:05d}-of-{num_shards:05d}.tfrecord"


def file_pattern(output_dir: str, slug: str, split: str) -> str:
  """The glob SeqIO reads for one method and split."""
  return posixpath.join(method_dir(output_dir, slug, split), "data-*.tfrecord")
