"""Documents -> train/validation split -> runs of 128 documents -> 10,240-byte examples.

Run membership must not depend on bundling, worker count or runner, so it is a pure function of
the documents: they are ordered by sha256(url), ties (duplicate URLs) by sha256 of the text, then
by the text, and each goes to bucket = sha256(url) mod `run_buckets`. A grouping per (split, bucket)
(grouping.GroupSorted: Beam's shuffle or spill files) sorts its documents by key and cuts them
into runs of `docs_per_run`; each run is concatenated (EOS after every document) and cut into
examples. Example ids are `<split>-<bucket>-<run>-<example>` with
fixed widths, so sorting ids sorts examples. Only the last run of each bucket can be short; at C4
scale pick run_buckets so that a bucket holds thousands of documents (e.g. 16384 for C4 en).

`examples_per_run` > 0 keeps only the first K examples of every run (a quick, deterministic
subset); the bytes left out are counted (`bytes_not_sampled`), never silently lost.
"""
from __future__ import annotations

import hashlib
import itertools

import apache_beam as beam

from beam_pipeline import grouping as grouping_lib
from beam_pipeline.sources.common import CounterTally
from beam_pipeline.sources.common import DocumentBlock
from neural_compression import corpus
from neural_compression import examples as ex

RUNS_NAMESPACE = "runs"


def _digest(data: bytes) -> bytes:
  return hashlib.sha256(data).digest()


def example_id(split: str, bucket: int, run: int, example: int) -> str:
  """The fixed-width id of one example; lexicographic order = (split, bucket, run, example)."""
  return f"{split}-{bucket:06d}-{run:06d}-{example:05d}"


class _KeyBySplitAndBucket(beam.DoFn):
  """Assigns each document its split and bucket; emits ((split, bucket), (sort_key, text)). Takes
  a record or a DocumentBlock of records (sources' document_blocks), whose documents it keys in
  one call."""

  def __init__(self, run_buckets: int, validation_percent: int, fixed_split: str | None):
    corpus.check_validation_percent(validation_percent)
    self._run_buckets = run_buckets
    self._validation_percent = validation_percent
    self._fixed_split = fixed_split

  def setup(self):
    # Counted per bundle, added to the counters at its end (a counter inc per document cost
    # about a microsecond each).
    self._tally = CounterTally(RUNS_NAMESPACE, ("document_text_bytes", "documents_split"))

  def finish_bundle(self):
    self._tally.flush()

  def process(self, doc):
    docs = doc if type(doc) is DocumentBlock else (doc,)  # pylint: disable=unidiomatic-typecheck
    fixed_split, percent, buckets = self._fixed_split, self._validation_percent, self._run_buckets
    split_of, from_bytes = corpus.split_of_digest_prefix, int.from_bytes
    pairs = []
    text_bytes = 0
    for doc in docs:
      text = doc["text"]  # str, or its UTF-8 bytes (sources.read_documents' utf8_text)
      if type(text) is not bytes:  # pylint: disable=unidiomatic-typecheck
        text = text.encode("utf-8")
      text_bytes += len(text)
      url_digest = _digest(doc["url"].encode("utf-8"))
      # The digest's first 8 bytes pick both the split and the bucket: read once.
      prefix = from_bytes(url_digest[:8], "big")
      split = fixed_split or split_of(prefix, percent)
      # Sorted by (URL digest, text); _in_run_order puts documents of one URL in the order of
      # their texts' digests, so a text is hashed only where its URL repeats.
      pairs.append(((split, prefix % buckets), (url_digest, text)))
    counts = self._tally.counts
    counts["document_text_bytes"] += text_bytes
    counts["documents_split"] += len(pairs)
    return pairs


def _in_run_order(docs):
  """Texts of (URL digest, text) pairs sorted by (URL digest, text), in run order: ties of a URL
  digest (duplicate URLs) by the sha256 of their text, then by their text."""
  group_digest, group = None, []
  for url_digest, text in docs:
    if url_digest != group_digest:
      yield from _by_text_digest(group)
      group_digest, group = url_digest, [text]
    else:
      group.append(text)
  yield from _by_text_digest(group)


def _by_text_digest(texts: list) -> list:
  """One URL's texts in run order: by their sha256, then by themselves."""
  return sorted(texts, key=lambda t: (_digest(t), t)) if len(texts) > 1 else texts


class _CutRunsFn(beam.DoFn):
  """Sorts one bucket's documents, groups them into runs and cuts runs into examples."""

  def __init__(self, docs_per_run: int, example_bytes: int, examples_per_run: int):
    self._docs_per_run = docs_per_run
    self._example_bytes = example_bytes
    self._examples_per_run = examples_per_run

  def setup(self):
    self._tally = CounterTally(RUNS_NAMESPACE, (
        "documents_in_runs", "runs", "examples", "bytes_in_examples", "bytes_not_sampled",
        "eos_symbols"))

  def process(self, keyed):
    (split, bucket), docs = keyed  # sorted by (URL digest, text) (GroupSorted), maybe a stream
    docs = _in_run_order(docs)
    counts = self._tally.counts
    try:
      for run_index in itertools.count():
        members = list(itertools.islice(docs, self._docs_per_run))
        if not members:
          return
        counts["runs"] += 1
        counts["documents_in_runs"] += len(members)
        counts["eos_symbols"] += len(members)
        pieces = ex.cut_examples(ex.run_symbols(members), self._example_bytes)
        for i, symbols in enumerate(pieces):
          if self._examples_per_run and i >= self._examples_per_run:
            counts["bytes_not_sampled"] += len(symbols)
            continue
          counts["examples"] += 1
          counts["bytes_in_examples"] += len(symbols)
          yield example_id(split, bucket, run_index, i), symbols
    finally:
      self._tally.flush()


class DocumentsToExamples(beam.PTransform):
  """PCollection[C4 record] -> PCollection[(example_id, symbols)] (see module docstring); a
  record's text may be str or its UTF-8 bytes (sources.read_documents' utf8_text).

  Args:
    docs_per_run: documents concatenated per run (paper: 128).
    example_bytes: symbols per example, EOS included (paper: 10,240).
    examples_per_run: keep the first K examples of each run; 0 keeps all.
    run_buckets: independent groups that runs are formed in (parallelism at scale).
    validation_percent: share of documents (by URL hash) in the validation split.
    fixed_split: put every document in this split instead (for a separate validation input).
    grouping: gathers and sorts each bucket's documents (grouping.GroupSorted; default:
      Beam's GroupByKey).
  """

  def __init__(self, docs_per_run: int = ex.DOCS_PER_RUN,
               example_bytes: int = ex.EXAMPLE_SYMBOLS, examples_per_run: int = 0,
               run_buckets: int = 1, validation_percent: int = corpus.VALIDATION_PERCENT,
               fixed_split: str | None = None,
               grouping: grouping_lib.GroupSorted | None = None):
    super().__init__()
    for name, value, low in (("docs_per_run", docs_per_run, 1), ("example_bytes", example_bytes, 1),
                             ("examples_per_run", examples_per_run, 0),
                             ("run_buckets", run_buckets, 1)):
      if value < low:
        raise ValueError(f"--{name} must be >= {low}, got {value}")
    if fixed_split is not None and fixed_split not in corpus.SPLITS:
      raise ValueError(f"fixed_split must be one of {corpus.SPLITS}, got {fixed_split!r}")
    self._key = _KeyBySplitAndBucket(run_buckets, validation_percent, fixed_split)
    self._cut = _CutRunsFn(docs_per_run, example_bytes, examples_per_run)
    self._grouping = grouping or grouping_lib.GroupSorted("beam")

  def expand(self, docs):
    return (docs
            | "GroupBuckets" >> self._grouping.keyed_by(self._key)
            | "CutRuns" >> beam.ParDo(self._cut))
