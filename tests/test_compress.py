"""beam_pipeline.compress: a batch's stats and records, made at once, are those of its examples
one by one."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st

from beam_pipeline import compress
from neural_compression import m2_examples
from neural_compression.methods.compressor import Encoded


def _encoded(num_tokens: int, num_bits: float, seed: int) -> Encoded:
  rng = np.random.default_rng(seed)
  return Encoded(rng.integers(0, 1 << 16, num_tokens).astype(np.int32), num_bits, num_tokens,
                 np.cumsum(np.r_[0, rng.integers(1, 6, num_tokens)]))


@settings(max_examples=60, deadline=None)
@given(examples=st.lists(st.tuples(st.sampled_from(["train", "validation"]),
                                   st.integers(0, 300), st.integers(0, 50),
                                   st.floats(0, 1e4, allow_nan=False)),
                         min_size=1, max_size=20),
       length=st.sampled_from([1, 7, 512]), mode=st.sampled_from(m2_examples.MODES))
def test_batch_stats_are_the_sums_of_each_examples_figures(examples, length, mode):
  splits = [split for split, _, _, _ in examples]
  xs = [np.zeros(n, np.uint16) for _, n, _, _ in examples]
  encoded = [_encoded(t, bits, k) for k, (_, _, t, bits) in enumerate(examples)]
  pieces_of = [m2_examples.m2_examples(enc, length, mode) for enc in encoded]
  want = {}
  for split, x, enc, pieces in zip(splits, xs, encoded, pieces_of):
    figures = want.setdefault(split, dict.fromkeys(compress.STATS_FIGURES, 0))
    raw = sum(p.raw_bytes for p in pieces)
    for name, value in zip(compress.STATS_FIGURES, (
        1, len(x), len(enc.tokens), int(enc.num_bits), enc.num_windows, len(pieces),
        sum(len(p.tokens) for p in pieces), raw, len(x) - raw)):
      figures[name] += value
  got = compress._batch_stats(splits, xs, encoded, pieces_of)  # pylint: disable=protected-access
  assert got == want
  assert all(list(figures) == list(compress.STATS_FIGURES) for figures in got.values())


def test_a_batchs_records_are_each_pieces_record_as_one_encoder_call_writes_it():
  encoded = [_encoded(n, 16.0 * n, n) for n in (0, 5, 700, 1300)]
  pieces_of = [m2_examples.m2_examples(enc, 512, "split") for enc in encoded]
  ids = [f"train-000000-000001-{k:05d}" for k in range(len(encoded))]
  pieces = [p for ps in pieces_of for p in ps]
  owners = [ids[k] for k, ps in enumerate(pieces_of) for _ in ps]
  encoder = compress._RECORD_ENCODER  # pylint: disable=protected-access
  assert compress.serialize_records(pieces, owners) == [
      encoder(p.tokens, [p.raw_bytes], [p.chunk], [i.encode()]) for p, i in zip(pieces, owners)]
