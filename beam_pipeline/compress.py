"""Compression stage: batches of examples -> every method -> serialized M2 records.

Like RunInference's ModelHandler, loading, batching and inference are separate: the compressors
(M1 engine included) are built once per worker process through `beam.utils.shared.Shared` and
shared by its threads; the DoFn gathers fixed-size batches of each bundle's examples; each
compressor's `encode_batch` does the work (the exact M1 engine batches across examples; its
output does not depend on the batch).
"""
from __future__ import annotations

import dataclasses
import gc
import hashlib
import logging
import time

import apache_beam as beam
from apache_beam.transforms import window
from apache_beam.utils import shared

from beam_pipeline import tf_example
from neural_compression import m2_examples
from neural_compression import methods
from neural_compression import output_layout as layout

COMPRESS_NAMESPACE = "compress"


@dataclasses.dataclass(frozen=True)
class Artifacts:
  """What the compressors need, small enough to ship inside the pipeline.

  Attributes:
    m1_checkpoint: directory of the M1 checkpoint, readable by the workers (a path inside the
      worker image, or any Beam filesystem such as gs://).
    static_unigram_json: the static unigram artifact's text.
    spm_model_proto: the SentencePiece model's bytes.
  """
  m1_checkpoint: str | None = None
  static_unigram_json: str | None = None
  spm_model_proto: bytes | None = None
  m1_cache_bytes: int | None = None  # the M1 prefix cache's budget (speed only, not content)
  m1_context: int | None = None  # M1's attention window in symbols (None: the checkpoint's)

  def fingerprint(self) -> str:
    """sha256 over the artifacts' contents (M1 by its path; its checksum is in the manifest)."""
    h = hashlib.sha256()
    for part in (self.m1_checkpoint or "", str(self.m1_context or ""),
                 self.static_unigram_json or "", self.spm_model_proto or b""):
      h.update(part.encode() if isinstance(part, str) else part)
      h.update(b"\0")
    return h.hexdigest()


def local_copy(directory: str) -> str:
  """A local path for a checkpoint directory on any Beam filesystem (copied once per process)."""
  if "://" not in directory:
    return directory
  import posixpath
  import tempfile
  from apache_beam.io.filesystems import FileSystems
  local = tempfile.mkdtemp(prefix="m1_checkpoint_")
  for meta in FileSystems.match([posixpath.join(directory, "*")])[0].metadata_list:
    with FileSystems.open(meta.path) as src, open(
        posixpath.join(local, posixpath.basename(meta.path)), "wb") as dst:
      dst.write(src.read())
  return local


def freeze_loaded_objects() -> None:
  """Moves every object the process holds now (its modules, Beam's, the loaded M1) out of the
  cyclic garbage collector's reach (gc.freeze). A job's millions of long-lived objects made each
  full collection cost ~0.1 s; with C4-sized documents their collections took 0.22 s per 97 MB
  here, 0.08 s once frozen. Frozen objects are still freed by reference counting; only cycles
  among them are never collected: the garbage there is now is collected first, so that what is
  frozen is the process's live state (a process that runs many jobs, a test session, would
  otherwise keep each earlier job's cyclic garbage)."""
  gc.collect()
  gc.freeze()


class Compressors:
  """The per-process set of compressors, by method slug (a weakref-able holder for Shared)."""

  def __init__(self, specs, artifacts: Artifacts):
    m1_model = unigram = None
    if any(s.uses_m1 for s in specs):
      from neural_compression.m1 import engine as exact_engine  # JAX-free compiled path on CPU workers
      budget = {} if artifacts.m1_cache_bytes is None else {
          "max_cache_bytes": artifacts.m1_cache_bytes}
      m1_model = exact_engine.load_exact_model(local_copy(artifacts.m1_checkpoint),
                                               max_context=artifacts.m1_context, **budget)
    if any(s.kind in methods.UNIGRAM_KINDS for s in specs):
      from neural_compression.methods import static_unigram
      unigram = static_unigram.StaticUnigramModel.from_json(artifacts.static_unigram_json)
    self.by_slug = {
        s.slug: (s, methods.build_compressor(s, m1_model=m1_model, unigram_model=unigram,
                                             spm_model_proto=artifacts.spm_model_proto))
        for s in specs}


class CompressionHandler:
  """Load, batch, encode: the compression stage's one handler, shared by the job and verify.

  As Beam RunInference's ModelHandler: `load` builds the compressors (the M1 engine included)
  once per worker process through `beam.utils.shared.Shared`, `batch_size` says how many
  examples go in one batch, and `encode_batch` runs every method on one batch.
  """

  def __init__(self, specs, artifacts: Artifacts, batch_size: int = 1):
    self.specs = list(specs)
    self.artifacts = artifacts
    self.batch_size = batch_size
    self._shared = shared.Shared()

  def load(self) -> Compressors:
    """The process's compressors, built on first use and shared by its threads and DoFns."""
    return self._shared.acquire(lambda: Compressors(self.specs, self.artifacts),
                                tag=self.artifacts.fingerprint())

  @staticmethod
  def encode_batch(compressors: Compressors, xs) -> dict:
    """{slug: (spec, [encoded example per x])} for a batch of symbol arrays."""
    return {slug: (spec, compressor.encode_batch(xs))
            for slug, (spec, compressor) in compressors.by_slug.items()}


_RECORD_ENCODER = tf_example.ExampleEncoder([layout.TARGETS, layout.RAW_BYTES, layout.CHUNK],
                                           [layout.EXAMPLE_ID])


def serialize_records(pieces, example_ids: list[str]) -> list[bytes]:
  """Each M2 example of `pieces` (its example's id in `example_ids`) as a serialized
  tf.train.Example (schema: output_layout), the tokens of all of them varint-encoded in one call.

  Written without TensorFlow (tf_example: the same bytes as TF's deterministic serialization),
  so that compressing workers never pay TF's import.
  """
  return _RECORD_ENCODER.many([p.tokens for p in pieces], [[p.raw_bytes] for p in pieces],
                              [[p.chunk] for p in pieces], [[i.encode()] for i in example_ids])


# The additive figures of the stats output, per (method, split); write.WriteStats sums them.
STATS_FIGURES = ("examples", "input_bytes", "tokens", "bits", "windows", "m2_examples",
                 "m2_tokens", "m2_raw_bytes", "bytes_trimmed")


def _batch_stats(splits, xs, encoded, pieces_of) -> dict:
  """{split: STATS_FIGURES summed over the batch's examples of that split} (examples k: split
  splits[k], symbols xs[k], Encoded encoded[k], M2 examples pieces_of[k]). Summed per batch:
  the stats are additive, and one element per batch costs the runner far less than one per
  example."""
  totals = {}
  for split in set(splits):
    ks = [k for k, s in enumerate(splits) if s == split]
    m2 = [piece for k in ks for piece in pieces_of[k]]
    input_bytes = sum(len(xs[k]) for k in ks)
    m2_raw_bytes = sum(piece.raw_bytes for piece in m2)
    totals[split] = dict(zip(STATS_FIGURES, (
        len(ks), input_bytes, sum(len(encoded[k].tokens) for k in ks),
        sum(int(encoded[k].num_bits) for k in ks), sum(encoded[k].num_windows for k in ks),
        len(m2), sum(len(piece.tokens) for piece in m2), m2_raw_bytes,
        input_bytes - m2_raw_bytes)))
  return totals


class CompressBatchFn(beam.DoFn):
  """(example_id, symbols) -> ((slug, split), (sort_key, record)) and stats per method.

  Gathers each bundle's examples into batches of the handler's batch_size (the last of a
  bundle may be smaller) and compresses a batch at once. Fixed-size batches: the M1 engine's
  speed grows with its rows (Beam's adaptive BatchElements starts at one element), and batching
  here keeps the batches out of the runner, which sizes the elements it passes on by encoding a
  sample of them, pickling every example of a sampled batch.

  Main output: keyed records for the sharded writer. Tagged output 'stats':
  ((slug, split), dict of STATS_FIGURES summed over the batch's examples of that split).
  """

  STATS_TAG = "stats"

  def __init__(self, handler: CompressionHandler, m2_length: int, m2_mode: str,
               fail_once_marker: str | None = None):
    self._handler = handler
    self._m2_length = m2_length
    self._m2_mode = m2_mode
    self._fail_once_marker = fail_once_marker
    self._last_log = 0.0

  def setup(self):
    self._compressors = self._handler.load()
    freeze_loaded_objects()  # a worker's long-lived state, M1 included, now exists
    counter = lambda name: beam.metrics.Metrics.counter(COMPRESS_NAMESPACE, name)
    self._examples = counter("examples_compressed")
    self._bytes = counter("bytes_compressed")
    self._started = time.monotonic()
    self._done_bytes = 0
    self._done_examples = 0

  def _maybe_fail_once(self):
    # Test-only fault injection: the first bundle that sees no marker file fails after creating
    # it, so the runner's retry must reproduce the output exactly.
    if not self._fail_once_marker:
      return
    from apache_beam.io.filesystems import FileSystems
    if not FileSystems.exists(self._fail_once_marker):
      FileSystems.create(self._fail_once_marker).close()
      raise RuntimeError("injected fault (--fail_once_for_testing): retry me")

  def start_bundle(self):
    self._pending = []

  def process(self, example):
    self._pending.append(example)
    if len(self._pending) >= self._handler.batch_size:
      batch, self._pending = self._pending, []
      yield from self._compress(batch)

  def finish_bundle(self):
    if self._pending:
      batch, self._pending = self._pending, []
      for out in self._compress(batch):
        if isinstance(out, beam.pvalue.TaggedOutput):
          yield beam.pvalue.TaggedOutput(out.tag, window.GlobalWindows.windowed_value(out.value))
        else:
          yield window.GlobalWindows.windowed_value(out)

  def _compress(self, batch):
    self._maybe_fail_once()
    ids = [example_id for example_id, _ in batch]
    xs = [symbols for _, symbols in batch]
    splits = [example_id.split("-", 1)[0] for example_id in ids]
    for slug, (spec, encoded) in self._handler.encode_batch(self._compressors, xs).items():
      unit = m2_examples.token_unit(spec.window_bits, spec.token_bits)
      pieces_of = [m2_examples.m2_examples(enc, self._m2_length, self._m2_mode, unit)
                   for enc in encoded]
      # The batch's M2 records in order (each example's pieces in turn), serialized at once.
      owners = [k for k, pieces in enumerate(pieces_of) for _ in pieces]
      pieces = [piece for example_pieces in pieces_of for piece in example_pieces]
      records = serialize_records(pieces, [ids[k] for k in owners])
      for k, piece, record in zip(owners, pieces, records):
        yield (slug, splits[k]), (f"{ids[k]}/{piece.chunk:05d}", record)
      totals = _batch_stats(splits, xs, encoded, pieces_of)
      for split, figures in sorted(totals.items()):
        yield beam.pvalue.TaggedOutput(self.STATS_TAG, ((slug, split), figures))
      beam.metrics.Metrics.counter(COMPRESS_NAMESPACE, f"{slug}/tokens").inc(
          sum(figures["tokens"] for figures in totals.values()))
    self._examples.inc(len(batch))
    nbytes = sum(len(x) for x in xs)
    self._bytes.inc(nbytes)
    self._log_progress(len(batch), nbytes)

  def _log_progress(self, examples: int, nbytes: int):
    self._done_examples += examples
    self._done_bytes += nbytes
    now = time.monotonic()
    if now - self._last_log >= 30:
      elapsed = max(now - self._started, 1e-9)
      logging.info("compressed %d examples, %.1f MB: %.1f examples/s, %.0f bytes/s (this worker)",
                   self._done_examples, self._done_bytes / 1e6, self._done_examples / elapsed,
                   self._done_bytes / elapsed)
      self._last_log = now


class CompressExamples(beam.PTransform):
  """PCollection[(example_id, symbols)] -> (records keyed by (slug, split), stats)."""

  def __init__(self, specs, artifacts: Artifacts, m2_length: int, m2_mode: str,
               batch_size: int, fail_once_marker: str | None = None):
    super().__init__()
    self._handler = CompressionHandler(specs, artifacts, batch_size)
    self._fn = CompressBatchFn(self._handler, m2_length, m2_mode, fail_once_marker)

  def expand(self, examples):
    outputs = examples | "Compress" >> beam.ParDo(self._fn).with_outputs(
        CompressBatchFn.STATS_TAG, main="records")
    return outputs.records, outputs[CompressBatchFn.STATS_TAG]
