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
  texts = [d.encode("utf-8") if isinstance(d, str) else d for d in documents]
  # Each document widened straight into its place in the run: an array per document and their
  # concatenation cost twice as much here (a copy more, into fresh pages).
  out = np.empty(sum(len(t) for t in texts) + len(texts), dtype=sym.SYMBOL_DTYPE)
  position = 0
  for text in texts:
    end = position + len(text)
    out[position:end] = np.frombuffer(text, dtype=np.uint8)
    out[end] = sym.EOS
    position = end + 1
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
