"""Runs and examples: a run is its documents' symbols, each followed by EOS; examples cut it."""
import random

import numpy as np
import pytest

from neural_compression import examples as ex
from neural_compression import symbols as sym


def _documents(seed: int) -> list:
  """Documents of every kind a run meets: empty ones, NUL and 0xFF bytes, str with non-ASCII."""
  rng = random.Random(seed)
  docs = [rng.randbytes(rng.randrange(0, 3000)) for _ in range(rng.randrange(1, 40))]
  docs += [b"", b"\x00\x00", b"\xff", "é\u4e2d\U0001f600", "", b"\x00"]
  rng.shuffle(docs)
  return docs


@pytest.mark.parametrize("seed", range(5))
def test_a_run_is_each_documents_symbols_then_eos(seed):
  docs = _documents(seed)
  run = ex.run_symbols(docs)
  expected = np.concatenate([sym.document_symbols(d) for d in docs])
  assert run.dtype == sym.SYMBOL_DTYPE and np.array_equal(run, expected)
  texts = [d.encode() if isinstance(d, str) else d for d in docs]
  assert len(run) == sum(len(t) for t in texts) + len(docs)
  assert int((run == sym.EOS).sum()) == len(docs)  # NUL bytes stay bytes


def test_an_empty_run_has_no_symbols():
  run = ex.run_symbols([])
  assert run.dtype == sym.SYMBOL_DTYPE and run.size == 0


def test_examples_cut_a_run_into_pieces_that_join_back():
  run = ex.run_symbols(_documents(7))
  pieces = ex.cut_examples(run, 1000)
  assert all(len(p) == 1000 for p in pieces[:-1]) and 0 < len(pieces[-1]) <= 1000
  assert np.array_equal(np.concatenate(pieces), run)
