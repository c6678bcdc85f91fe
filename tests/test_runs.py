"""Tests for beam_pipeline.runs: which documents make which run, in which order.

The order is the module's contract: by sha256 of the URL, ties (duplicate URLs) by sha256 of the
text, then by the text; every grouping (Beam's shuffle, spill files) must give it."""
from __future__ import annotations

import hashlib

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that
from apache_beam.testing.util import equal_to
import pytest

from beam_pipeline import grouping as grouping_lib
from beam_pipeline import runs
from neural_compression import corpus
from neural_compression import examples as ex


def _sha(data: str) -> bytes:
  return hashlib.sha256(data.encode()).digest()


def _expected_examples(docs, docs_per_run, run_buckets, split="train"):
  """The examples the contract gives, built here without the job's code."""
  ordered = sorted(docs, key=lambda d: (_sha(d["url"]), _sha(d["text"]), d["text"].encode()))
  buckets = {}
  for doc in ordered:
    bucket = int.from_bytes(_sha(doc["url"])[:8], "big") % run_buckets
    buckets.setdefault(bucket, []).append(doc["text"])
  expected = []
  for bucket, texts in buckets.items():
    for run in range(0, len(texts), docs_per_run):
      symbols = ex.run_symbols(texts[run:run + docs_per_run])
      expected.append((runs.example_id(split, bucket, run // docs_per_run, 0), symbols.tolist()))
  return expected


# Duplicate URLs with different texts (some texts equal, some one a prefix of another), and
# texts whose sha256 order differs from their byte order.
_DOCS = ([{"url": "https://a.example/x", "text": t, "timestamp": ""}
          for t in ("b", "a", "ab", "a", "zz", "", "é", "aa")]
         + [{"url": f"https://b.example/{i % 5}", "text": f"t{i}", "timestamp": ""}
            for i in range(23)]
         + [{"url": f"https://c.example/{i}", "text": "same", "timestamp": ""} for i in range(7)])


@pytest.mark.parametrize("shuffle", ["beam", "files"])
@pytest.mark.parametrize("run_buckets", [1, 3])
def test_runs_follow_url_digest_then_text_digest_order(tmp_path, shuffle, run_buckets):
  docs_per_run = 4
  grouping = grouping_lib.GroupSorted(shuffle, str(tmp_path / "spill"), buffer_bytes=64)
  with BeamTestPipeline() as p:
    examples = (p | beam.Create(_DOCS, reshuffle=True)
                | runs.DocumentsToExamples(docs_per_run, example_bytes=1 << 20,
                                           run_buckets=run_buckets, fixed_split="train",
                                           grouping=grouping)
                | beam.MapTuple(lambda example_id, symbols: (example_id, symbols.tolist())))
    assert_that(examples, equal_to(_expected_examples(_DOCS, docs_per_run, run_buckets)))


def test_duplicate_urls_share_their_split():
  # The split is a function of the URL alone: every copy of a URL is on one side.
  with BeamTestPipeline() as p:
    examples = (p | beam.Create(_DOCS)
                | runs.DocumentsToExamples(1, example_bytes=1 << 20, validation_percent=50)
                | beam.MapTuple(lambda example_id, symbols: (
                    example_id.split("-")[0], bytes(symbols[:-1].astype("uint8")).decode())))
    expected = [(corpus.split_of_url(d["url"], 50), d["text"]) for d in _DOCS]
    assert_that(examples, equal_to(expected))


def test_a_document_block_is_keyed_as_its_records_one_by_one():
  # The job's reader gives blocks of records (sources' document_blocks): keyed in one call,
  # they must make the pairs, in order, and the counts of keying each record alone.
  from beam_pipeline.sources.common import DocumentBlock
  records = [{"text": t, "url": u, "timestamp": ""} for t, u in
             [(b"a", "u1"), ("b\u00e9", "u2"), (b"", "u1"), ("x" * 50, "https://e.org/\u00e9")]]
  for fixed_split in (None, "validation"):
    one, block = (runs._KeyBySplitAndBucket(5, 40, fixed_split) for _ in range(2))
    one.setup()
    block.setup()
    pairs = [pair for record in records for pair in one.process(record)]
    assert block.process(DocumentBlock(records)) == pairs
    assert len(pairs) == len(records)
    assert block._tally.counts == one._tally.counts  # pylint: disable=protected-access
    assert block.process(DocumentBlock()) == []
