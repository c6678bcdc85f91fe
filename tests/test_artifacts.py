"""Artifacts estimated inside the pipeline (beam_pipeline/artifacts.py): the static unigram as a
Beam combine, SentencePiece on a bounded hash sample of train documents, both keyed by content
and identical on any runner or worker count."""
from __future__ import annotations

import random

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipeline import artifacts
from beam_pipeline import options as options_lib
from neural_compression import methods
from neural_compression.methods import sentencepiece as spc
from tests import pipeline_test_corpus as corpus_gen


def _docs(count=30, seed=51):
  docs = corpus_gen.make_documents(count, seed=seed, mean_words=50)
  # Windows line ends in some documents: the core's recipe turns CR into a line break.
  return [{**d, "text": d["text"].replace(". ", ".\r\n", 2) if i % 3 == 0 else d["text"]}
          for i, d in enumerate(docs)]


def _brute_force_sample(docs, budget):
  kept, size = [], 0
  for doc in sorted(docs, key=artifacts.document_digest):
    n = len(doc["text"].encode())
    if size + n > budget:
      break
    kept.append(doc["text"])
    size += n
  return kept


@pytest.mark.parametrize("budget", [1, 500, 3_000, 10_000_000])
def test_bounded_sample_is_the_digest_ordered_prefix_whatever_the_bundling(budget):
  docs = _docs()
  combine = artifacts.BoundedSample(budget)
  want = _brute_force_sample(docs, budget)
  rng = random.Random(budget)
  for _ in range(5):  # random bundles, merged in random orders
    shuffled = docs[:]
    rng.shuffle(shuffled)
    cuts = sorted(rng.sample(range(1, len(docs)), 3))
    accs = []
    for part in (shuffled[:cuts[0]], shuffled[cuts[0]:cuts[1]], shuffled[cuts[1]:cuts[2]],
                 shuffled[cuts[2]:]):
      acc = combine.create_accumulator()
      for doc in part:
        acc = combine.add_input(acc, doc)
      accs.append(acc)
    rng.shuffle(accs)
    merged = combine.merge_accumulators([combine.merge_accumulators(accs[:2]),
                                         combine.merge_accumulators(accs[2:])])
    out = combine.extract_output(merged)
    assert out["texts"] == want
    assert out["bytes"] == sum(len(t.encode()) for t in want) <= budget
    assert out["documents"] == len(want)


def test_duplicated_documents_stand_or_fall_together():
  doc = {"text": "the same line " * 10, "url": "https://t.test/dup"}
  docs = [doc, dict(doc)] + _docs(10)
  budget = 140 + 100  # both copies together do not fit beside much else
  combine = artifacts.BoundedSample(budget)
  outs = []
  for split in (len(docs), 1, 2, 5):
    accs = []
    for part in (docs[:split], docs[split:]):
      acc = combine.create_accumulator()
      for d in part:
        acc = combine.add_input(acc, d)
      accs.append(acc)
    outs.append(combine.extract_output(combine.merge_accumulators(accs)))
  assert all(o == outs[0] for o in outs), outs
  assert outs[0]["texts"].count(doc["text"]) in (0, 2)


def _options(corpus_dir, tmp_path, *extra):
  pattern = corpus_gen.write_c4_shards(corpus_dir, _docs())
  argv = ["--source=c4_json", f"--input={pattern}", f"--output_dir={tmp_path / 'out'}",
          "--validation_percent=20", "--spm_train_bytes=6000", *extra]
  pipeline_options = PipelineOptions(argv)
  return pipeline_options, pipeline_options.view_as(options_lib.CompressionOptions)


def test_artifacts_are_identical_across_worker_counts_and_follow_the_core_recipe(tmp_path):
  specs = methods.parse_methods("static_ac:v256,spm:v400")
  results = []
  for i, workers in enumerate(([], ["--direct_running_mode=multi_processing",
                                    "--direct_num_workers=2"])):
    pipeline_options, opts = _options(tmp_path / "c4", tmp_path / f"run{i}",
                                      f"--artifact_cache_dir={tmp_path / f'cache{i}'}", *workers)
    results.append(artifacts.prepare(opts, pipeline_options, specs))
  one, two = results
  assert one["static_unigram_json"] == two["static_unigram_json"]
  assert one["spm_model_proto"] == two["spm_model_proto"]
  sample = one["provenance"]["spm"]["estimated_from"]
  assert 0 < sample["bytes"] <= 6000 and sample["documents"] < sample["train_documents"]
  # The same model as the core's trainer on the same documents (CR handled alike).
  from neural_compression import corpus
  train = [d for d in _docs() if corpus.split_of_url(d["url"], 20) == "train"]
  assert one["spm_model_proto"] == spc.train_sentencepiece(_brute_force_sample(train, 6000),
                                                           vocab_size=400)
  assert one["provenance"]["static_unigram"]["estimated_from"]["documents"] == len(train)
