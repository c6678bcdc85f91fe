"""Artifacts the methods need, estimated on the train split when not given: the static unigram
model (StaticAC) and the SentencePiece model (spm). Cached under --artifact_cache_dir, keyed by what
they were estimated from, so repeated runs reuse them. The validation split never reaches them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import tempfile

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from beam_pipeline import sources
from beam_pipeline import write
from neural_compression import corpus
from neural_compression import methods
from neural_compression import static_unigram
from neural_compression import symbols as sym


def read_bytes(path: str) -> bytes:
  with FileSystems.open(path) as f:
    return f.read()


def _provenance(opts, what: str, extra: str = "") -> str:
  key = json.dumps([what, opts.source, opts.input, opts.validation_input,
                    opts.validation_percent, opts.spm_train_docs_permille, extra])
  return hashlib.sha256(key.encode()).hexdigest()


class _CountSymbols(beam.CombineFn):
  """Sums byte-value counts over documents, plus one EOS per document."""

  def create_accumulator(self):
    return np.zeros(sym.NUM_SYMBOLS, np.int64)

  def add_input(self, acc, text):
    data = text.encode("utf-8")
    acc[:256] += np.bincount(np.frombuffer(data, np.uint8), minlength=256)
    acc[sym.EOS] += 1
    return acc

  def merge_accumulators(self, accs):
    return sum(accs, self.create_accumulator())

  def extract_output(self, acc):
    return acc


def _train_texts(p, opts):
  """The train split's document texts (the validation split is filtered out here)."""
  docs = sources.read_documents(p, opts.source, opts.input, label="ReadTrain")
  if opts.validation_input:
    return docs | "Texts" >> beam.Map(lambda d: d["text"])
  percent = opts.validation_percent
  return (docs
          | "TrainOnly" >> beam.Filter(
              lambda d: corpus.split_of_url(d["url"], percent) == "train")
          | "Texts" >> beam.Map(lambda d: d["text"]))


def _estimate(opts, pipeline_options, artifacts_dir: str, want_unigram: bool, want_spm: bool):
  """Runs one small Beam job over the train split: unigram counts and the spm training text."""
  unigram_path = posixpath.join(artifacts_dir, "static_unigram.counts.npy.json")
  spm_text_dir = posixpath.join(artifacts_dir, "spm_train_text")
  permille = opts.spm_train_docs_permille
  with beam.Pipeline(options=pipeline_options) as p:
    texts = _train_texts(p, opts)
    if want_unigram:
      _ = (texts
           | "CountSymbols" >> beam.CombineGlobally(_CountSymbols())
           | "WriteCounts" >> beam.Map(lambda c: write.write_atomically(
               unigram_path, json.dumps([int(v) for v in c]).encode())))
    if want_spm:
      _ = (texts
           | "SampleForSpm" >> beam.Filter(
               lambda t: int(hashlib.sha256(t.encode()).hexdigest()[:8], 16) % 1000 < permille)
           | "WriteSpmText" >> beam.io.WriteToText(posixpath.join(spm_text_dir, "part")))
  return unigram_path, spm_text_dir


def prepare(opts, pipeline_options, specs) -> dict:
  """Returns {'static_unigram_json': str|None, 'spm_model_proto': bytes|None}, building what's
  missing (and caching it) from the train split."""
  artifacts_dir = opts.artifact_cache_dir or posixpath.join(opts.output_dir, "artifacts")
  spm_specs = [s for s in specs if s.kind == "spm"]
  if len({s.spm_vocab_size for s in spm_specs}) > 1:
    raise methods.MethodError("one run trains one SentencePiece model: list one spm:v<K>")
  need_unigram = any(s.kind in methods.UNIGRAM_KINDS for s in specs)
  out = {"static_unigram_json": None, "spm_model_proto": None}
  unigram_file = posixpath.join(artifacts_dir, f"static_unigram-{_provenance(opts, 'u')[:12]}.json")
  spm_file = None
  if spm_specs:
    vocab = spm_specs[0].spm_vocab_size
    spm_file = posixpath.join(artifacts_dir,
                              f"spm_v{vocab}-{_provenance(opts, 'spm', str(vocab))[:12]}.model")
  if need_unigram and opts.static_unigram:
    out["static_unigram_json"] = read_bytes(opts.static_unigram).decode()
  elif need_unigram and FileSystems.exists(unigram_file):
    out["static_unigram_json"] = read_bytes(unigram_file).decode()
  if spm_specs and opts.spm_model:
    out["spm_model_proto"] = read_bytes(opts.spm_model)
  elif spm_specs and FileSystems.exists(spm_file):
    out["spm_model_proto"] = read_bytes(spm_file)
  want_unigram = need_unigram and out["static_unigram_json"] is None
  want_spm = bool(spm_specs) and out["spm_model_proto"] is None
  if not (want_unigram or want_spm):
    return out
  logging.info("estimating artifacts on the train split: %s",
               ", ".join(n for n, w in (("static unigram", want_unigram), ("spm", want_spm)) if w))
  counts_path, spm_text_dir = _estimate(opts, pipeline_options, artifacts_dir, want_unigram,
                                        want_spm)
  if want_unigram:
    counts = np.asarray(json.loads(read_bytes(counts_path)), np.int64)
    model = static_unigram.StaticUnigramModel(counts, methods.DEFAULT_PRECISION_BITS,
                                              source=f"train split of {opts.source} {opts.input or ''}")
    out["static_unigram_json"] = model.to_json()
    write.write_atomically(unigram_file, out["static_unigram_json"].encode())
  if want_spm:
    from neural_compression.baselines import sentencepiece_compressor as spc
    with tempfile.TemporaryDirectory() as tmp:
      text_file = posixpath.join(tmp, "train.txt")
      with open(text_file, "wb") as f:
        for match in sorted(m.path for m in FileSystems.match(
            [posixpath.join(spm_text_dir, "part*")])[0].metadata_list):
          f.write(read_bytes(match))
      out["spm_model_proto"] = spc.train_sentencepiece_from_text_file(
          text_file, vocab_size=spm_specs[0].spm_vocab_size)
    write.write_atomically(spm_file, out["spm_model_proto"])
  return out
