"""Artifacts the methods need, estimated on the train split when not given: the static unigram
model (StaticAC) and the SentencePiece model (spm). The validation split never reaches them.

Keyed by content, not by flags or paths: one pass over the train split computes the unigram
counts and a fingerprint of exactly the documents each artifact is estimated from (an
order-independent sum of per-document sha256s, with their number and bytes). The static unigram
is a pure function of its counts, so it is rebuilt every run; the SentencePiece model is cached
under --artifact_cache_dir by the fingerprint of its training sample, the vocabulary size and
the training recipe, so changing the input's text retrains it and nothing stale is reused. Each
artifact's provenance (what it was estimated from, or the file it was given as) goes into the
run's manifest.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from beam_pipeline import output_dir as output_dir_lib
from beam_pipeline import sources
from beam_pipeline.options import ConfigError
from neural_compression import corpus
from neural_compression import methods
from neural_compression import run_manifest as rm
from neural_compression.methods import static_unigram
from neural_compression import symbols as sym

read_bytes = output_dir_lib.read_bytes
# Bump when the SentencePiece training text or options change: old cached models are not reused.
SPM_RECIPE_VERSION = 1


def artifacts_dir(opts) -> str:
  return opts.artifact_cache_dir or posixpath.join(opts.output_dir, rm.ARTIFACTS_SUBDIR)


def document_digest(doc: dict) -> int:
  """A document's identity for fingerprints: sha256 of url NUL text, as an integer."""
  return int.from_bytes(hashlib.sha256(
      doc["url"].encode("utf-8") + b"\0" + doc["text"].encode("utf-8")).digest(), "big")


class _Fingerprint(beam.CombineFn):
  """Documents -> {documents, bytes, content_sha256}, independent of order and bundling."""

  def create_accumulator(self):
    return (0, 0, 0)

  def add_input(self, acc, doc):
    n, nbytes, total = acc
    return (n + 1, nbytes + len(doc["text"].encode("utf-8")),
            (total + document_digest(doc)) % (1 << 256))

  def merge_accumulators(self, accs):
    n = nbytes = total = 0
    for a, b, c in accs:
      n, nbytes, total = n + a, nbytes + b, (total + c) % (1 << 256)
    return (n, nbytes, total)

  def extract_output(self, acc):
    n, nbytes, total = acc
    return {"documents": n, "bytes": nbytes, "content_sha256": f"{total:064x}"}


class _CountSymbols(beam.CombineFn):
  """Sums byte-value counts over documents, plus one EOS per document."""

  def create_accumulator(self):
    return np.zeros(sym.NUM_SYMBOLS, np.int64)

  def add_input(self, acc, doc):
    data = doc["text"].encode("utf-8")
    acc[:256] += np.bincount(np.frombuffer(data, np.uint8), minlength=256)
    acc[sym.EOS] += 1
    return acc

  def merge_accumulators(self, accs):
    return sum(accs, self.create_accumulator())

  def extract_output(self, acc):
    return [int(v) for v in acc]


def _train_documents(p, opts):
  """The train split's documents (the validation split is filtered out here)."""
  docs = sources.read_documents(p, opts.source, opts.input, label="ReadTrain",
                                **sources_options(opts, "train"))
  if opts.validation_input:
    return docs
  percent = opts.validation_percent
  return docs | "TrainOnly" >> beam.Filter(
      lambda d: corpus.split_of_url(d["url"], percent) == "train")


def sources_options(opts, split: str) -> dict:
  """Reader options from flags (text field, line mode, UTF-8 policy, TFDS split)."""
  return {"tfds_split": split, "text_field": opts.text_field, "lines": opts.text_lines,
          "invalid_utf8": opts.invalid_utf8}


class BoundedSample(beam.CombineFn):
  """Documents -> those of smallest digest (`document_digest`) whose texts fit a byte budget.

  The result is the longest prefix, in digest order, of all the documents whose UTF-8 texts
  total at most `budget_bytes` (documents of equal digest, duplicates, are in or out together):
  a hash sample that depends on the documents only, never on
  bundling, worker count or runner. An accumulator holds its own documents' prefix and the
  digest of the first document it dropped (its cutoff); merged, every document at or above the
  smallest cutoff is out, which makes partial prefixes add up to exactly the global one. Memory
  per accumulator is bounded by twice the budget. Output: {'texts': [...] in digest order,
  'documents', 'bytes', 'content_sha256'}.
  """

  def __init__(self, budget_bytes: int):
    self._budget = budget_bytes

  def _trim(self, items: list, total: int, cutoff):
    """(items, bytes, cutoff) with items below the cutoff, their prefix within the budget."""
    if cutoff is not None:
      items = [item for item in items if item[0] < cutoff]
      total = sum(item[2] for item in items)
    if total <= self._budget:
      return items, total, cutoff
    items.sort()
    kept, size = [], 0
    for item in items:
      if size + item[2] > self._budget:
        cutoff = item[0] if cutoff is None else min(cutoff, item[0])
        # Documents of equal digest (a duplicated line) stand or fall together.
        while kept and kept[-1][0] == cutoff:
          size -= kept.pop()[2]
        break
      kept.append(item)
      size += item[2]
    return kept, size, cutoff

  def create_accumulator(self):
    return [], 0, None

  def add_input(self, acc, doc):
    items, total, cutoff = acc
    key = document_digest(doc)
    if cutoff is not None and key >= cutoff:
      return acc  # cannot be in the sample any more
    n = len(doc["text"].encode("utf-8"))
    items.append((key, doc["text"], n))
    total += n
    # Trimmed only past twice the budget, so that adding stays O(log n) a document, amortized.
    return self._trim(items, total, cutoff) if total > 2 * self._budget else (items, total, cutoff)

  def merge_accumulators(self, accs):
    items, total, cutoffs = [], 0, []
    for part, size, cutoff in accs:
      items += part
      total += size
      if cutoff is not None:
        cutoffs.append(cutoff)
    return self._trim(items, total, min(cutoffs) if cutoffs else None)

  def extract_output(self, acc):
    items = sorted(self._trim(*acc)[0])
    digest = sum(key for key, _, _ in items) % (1 << 256)  # as _Fingerprint's
    return {"texts": [text for _, text, _ in items], "documents": len(items),
            "bytes": sum(n for _, _, n in items), "content_sha256": f"{digest:064x}"}


def _estimate(opts, pipeline_options, work_dir: str, want_unigram: bool, want_spm: bool) -> dict:
  """One Beam pass over the train split: fingerprints, unigram counts, the spm training sample."""
  out_path = posixpath.join(work_dir, "estimates.json")
  with beam.Pipeline(options=pipeline_options) as p:
    docs = _train_documents(p, opts)
    parts = [docs | "Fingerprint" >> beam.CombineGlobally(_Fingerprint())
             | "KeyFingerprint" >> beam.Map(lambda v: ("train", v))]
    if want_unigram:
      parts.append(docs | "CountSymbols" >> beam.CombineGlobally(_CountSymbols())
                   | "KeyCounts" >> beam.Map(lambda v: ("counts", v)))
    if want_spm:
      parts.append(docs | "SampleForSpm" >> beam.CombineGlobally(
          BoundedSample(opts.spm_train_bytes)) | "KeySample" >> beam.Map(lambda v: ("spm", v)))
    _ = (parts | "AllEstimates" >> beam.Flatten() | "Gather" >> beam.combiners.ToDict()
         | "Write" >> beam.Map(lambda d: output_dir_lib.write_file(
             out_path, json.dumps(d, sort_keys=True).encode())))
  return json.loads(read_bytes(out_path))


def _recorded_path(opts, path: str) -> str:
  """An artifact's path as the manifest records it: relative to --output_dir when inside it
  (so a copied run finds it), else absolute."""
  if "://" in path:
    return path
  try:
    rel = rm.relative_path(os.path.abspath(opts.output_dir), os.path.abspath(path))
  except ValueError:
    return os.path.abspath(path)
  return rel if rm.is_inside(rel) else os.path.abspath(path)


def _cache_copy(cache_dir: str, name: str, data: bytes) -> str:
  """Writes `data` under `name` in the cache unless an identical file is there; returns its path."""
  path = posixpath.join(cache_dir, name)
  if not FileSystems.exists(path) or read_bytes(path) != data:
    output_dir_lib.write_file(path, data)
  return path


def _given(opts, cache_dir: str, flag_path: str, data: bytes, prefix: str, suffix: str) -> dict:
  """Provenance of an artifact given by flag; a copy goes into the cache, so the run keeps it
  even if the given file moves."""
  digest = hashlib.sha256(data).hexdigest()
  copy = _cache_copy(cache_dir, f"{prefix}-{digest[:12]}{suffix}", data)
  return {"given": flag_path, "sha256": digest, "file": _recorded_path(opts, copy)}


def prepare(opts, pipeline_options, specs, run_id: str = "estimate") -> dict:
  """Returns {'static_unigram_json', 'spm_model_proto', 'provenance'}, estimating what the
  flags do not give from the train split (see the module docstring)."""
  cache_dir = artifacts_dir(opts)
  spm_specs = [s for s in specs if s.kind == "spm"]
  need_unigram = any(s.kind in methods.UNIGRAM_KINDS for s in specs)
  out = {"static_unigram_json": None, "spm_model_proto": None, "provenance": {}}
  if need_unigram and opts.static_unigram:
    out["static_unigram_json"] = read_bytes(opts.static_unigram).decode()
    out["provenance"]["static_unigram"] = _given(
        opts, cache_dir, opts.static_unigram, out["static_unigram_json"].encode(),
        "static_unigram", ".json")
  if spm_specs and opts.spm_model:
    out["spm_model_proto"] = read_bytes(opts.spm_model)
    out["provenance"]["spm"] = _given(opts, cache_dir, opts.spm_model, out["spm_model_proto"],
                                      f"spm_v{spm_specs[0].spm_vocab_size}", ".model")
  want_unigram = need_unigram and out["static_unigram_json"] is None
  want_spm = bool(spm_specs) and out["spm_model_proto"] is None
  if not (want_unigram or want_spm):
    return out
  work_dir = posixpath.join(cache_dir, f".estimate-{run_id}")
  logging.info("estimating on the train split: %s", ", ".join(
      n for n, w in (("static unigram", want_unigram), ("spm", want_spm)) if w))
  try:
    estimates = _estimate(opts, pipeline_options, work_dir, want_unigram, want_spm)
    if want_unigram:
      _unigram(opts, cache_dir, estimates, out)
    if want_spm:
      _spm(opts, cache_dir, spm_specs[0].spm_vocab_size, estimates, out)
  finally:
    output_dir_lib.remove_tree(work_dir)
  return out


def _cached_model(path: str) -> bytes | None:
  """A cached model whose bytes match the sha256 written beside it when it was trained; None
  (retrain) if either file is missing or they disagree (a damaged or swapped cache entry)."""
  if not (FileSystems.exists(path) and FileSystems.exists(path + ".sha256")):
    return None
  proto = read_bytes(path)
  if hashlib.sha256(proto).hexdigest() != read_bytes(path + ".sha256").decode().strip():
    logging.warning("cached %s does not match its recorded sha256: training it again", path)
    return None
  return proto


def _unigram(opts, cache_dir: str, estimates: dict, out: dict) -> None:
  source = estimates["train"]
  if not source["documents"]:
    raise ConfigError("the train split has no documents to estimate StaticAC's unigram model "
                      "on: give more input, a lower --validation_percent, or --static_unigram")
  counts = np.asarray(estimates["counts"], np.int64)
  model = static_unigram.StaticUnigramModel(
      counts, methods.DEFAULT_PRECISION_BITS,
      source=f"train split, {source['documents']} documents, content {source['content_sha256']}")
  text = model.to_json()
  digest = hashlib.sha256(text.encode()).hexdigest()
  # Rewritten if a damaged copy is there: SeqIO readers find the run's model by its sha256.
  path = _cache_copy(cache_dir, f"static_unigram-{digest[:12]}.json", text.encode())
  out["static_unigram_json"] = text
  out["provenance"]["static_unigram"] = {"sha256": digest, "file": _recorded_path(opts, path),
                                         "estimated_from": {"split": "train", **source}}


def _spm(opts, cache_dir: str, vocab: int, estimates: dict, out: dict) -> None:
  sample = estimates["spm"]
  if not sample["documents"] or not sample["bytes"]:
    raise ConfigError(
        f"SentencePiece (spm:v{vocab}) has no train text to learn from: the train split has "
        f"{estimates['train']['documents']} documents and none fits --spm_train_bytes="
        f"{opts.spm_train_bytes}. Give more input, raise --spm_train_bytes, lower "
        "--validation_percent, or pass --spm_model")
  key = hashlib.sha256(json.dumps(
      [sample["content_sha256"], sample["documents"], vocab, SPM_RECIPE_VERSION]).encode())
  path = posixpath.join(cache_dir, f"spm_v{vocab}-{key.hexdigest()[:12]}.model")
  proto = _cached_model(path)
  if proto is None:
    from neural_compression.methods import sentencepiece as spc
    try:  # the core's recipe: the same lines as train_sentencepiece on these documents
      proto = spc.train_sentencepiece(sample["texts"], vocab_size=vocab)
    except RuntimeError as e:
      raise ConfigError(f"SentencePiece (spm:v{vocab}) failed to train on the train split's "
                        f"sample ({sample['documents']} documents, {sample['bytes']} bytes): "
                        f"{e}") from None
    output_dir_lib.write_file(path, proto)
    output_dir_lib.write_file(path + ".sha256", hashlib.sha256(proto).hexdigest().encode())
  out["spm_model_proto"] = proto
  del sample["texts"]
  out["provenance"]["spm"] = {
      "sha256": hashlib.sha256(proto).hexdigest(), "file": _recorded_path(opts, path),
      "estimated_from": {"split": "train", "budget_bytes": opts.spm_train_bytes,
                         "train_documents": estimates["train"]["documents"],
                         "train_bytes": estimates["train"]["bytes"], **sample}}
