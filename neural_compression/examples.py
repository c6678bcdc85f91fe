"""Runs and examples: the paper's unit of compression.

Documents are each followed by one EOS, DOCS_PER_RUN (128) documents are concatenated into a
*run*, and every run is cut into EXAMPLE_SYMBOLS (10,240)-symbol examples, each compressed
independently; a run's last example may be shorter. "Bytes" of an example count its symbols, EOS
included (the paper's 10,240-byte examples include the separators).
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from neural_compression import symbols as sym

DOCS_PER_RUN = 128
EXAMPLE_SYMBOLS = 10_240


def run_symbols(documents: Iterable[bytes | str]) -> np.ndarray:
  """Concatenates documents, each followed by EOS, into one symbol sequence (sum of the
  documents' UTF-8 bytes + one EOS each, in symbols)."""
  from neural_compression import run_widening  # numba, only where runs are made
  texts = [d.encode("utf-8") if isinstance(d, str) else d for d in documents]
  # Joined once in C, then widened in one compiled call: numpy per document cost ~1 us each.
  joined = b"".join(texts)
  lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
  out = np.empty(len(joined) + len(texts), dtype=sym.SYMBOL_DTYPE)
  run_widening.widen_documents(np.frombuffer(joined, dtype=np.uint8), lengths, out, sym.EOS)
  return out


def cut_examples(run: np.ndarray, example_symbols: int = EXAMPLE_SYMBOLS) -> list[np.ndarray]:
  """Cuts a run into consecutive examples of `example_symbols` symbols (the last may be shorter)."""
  if example_symbols < 1:
    raise ValueError(f"example length must be >= 1 symbol, got {example_symbols}")
  return [run[i:i + example_symbols] for i in range(0, len(run), example_symbols)]


def examples_from_documents(documents: Iterable[bytes | str],
                            docs_per_run: int = DOCS_PER_RUN,
                            example_symbols: int = EXAMPLE_SYMBOLS) -> Iterator[np.ndarray]:
  """Groups documents in order into runs and yields their examples (for scripts and tests)."""
  batch: list[bytes | str] = []
  for doc in documents:
    batch.append(doc)
    if len(batch) == docs_per_run:
      yield from cut_examples(run_symbols(batch), example_symbols)
      batch = []
  if batch:
    yield from cut_examples(run_symbols(batch), example_symbols)
