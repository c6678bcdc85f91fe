"""beam_pipeline.tf_example writes byte-for-byte what TensorFlow writes for the same Example."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings, strategies as st

from beam_pipeline import tf_example

INT64 = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
# Every 7-bit varint boundary below 2**63 and its neighbours (the float log2 length estimate
# once got 2**49 - 1 wrong), plus the int64 extremes (negatives take all 10 bytes).
EDGE_INTS = sorted({(1 << 7 * k) + d for k in range(1, 9) for d in (-1, 0, 1)}
                   | {0, 1, 255, 65535, (1 << 53) - 1, (1 << 53) + 1, (1 << 63) - 1, -1, -(1 << 63)})


def tf_bytes(int64_features, bytes_features) -> bytes:
  feature = {k: tf.train.Feature(int64_list=tf.train.Int64List(value=list(v)))
             for k, v in int64_features.items()}
  feature.update({k: tf.train.Feature(bytes_list=tf.train.BytesList(value=list(v)))
                  for k, v in bytes_features.items()})
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(
      deterministic=True)


@settings(max_examples=150, deadline=None)
@given(ints=st.dictionaries(st.text(min_size=1, max_size=8), st.lists(INT64, max_size=40),
                            max_size=4),
       blobs=st.dictionaries(st.text(min_size=1, max_size=8).map(lambda s: "b_" + s),
                             st.lists(st.binary(max_size=20), max_size=3), max_size=3))
def test_matches_tensorflow(ints, blobs):
  ints = {k: v for k, v in ints.items() if not k.startswith("b_")}
  assert tf_example.encode_example(ints, blobs) == tf_bytes(ints, blobs)


def test_map_keys_in_upb_order_including_prefixes():
  # The order the pinned protobuf (upb) writes: bytes order, but a key after the keys it
  # prefixes. Hypothesis first found 'b_0' / 'b_00'.
  blobs = {k: [b"x"] for k in ["a", "ab", "abc", "b", "ba", "z", "e", "\u00e9", "b_0", "b_00"]}
  assert tf_example.encode_example({}, blobs) == tf_bytes({}, blobs)
  assert tf_example.encode_example({"ab": [1], "a": [2]}, {}) == tf_bytes({"ab": [1], "a": [2]}, {})


def test_edge_values_and_the_record_schema():
  tokens = np.array(EDGE_INTS + list(range(0, 70000, 997)), np.int64)
  ints = {"targets": tokens, "raw_bytes": [10240], "chunk": [0], "empty": []}
  blobs = {"example_id": [b"train-000000-000001-00002"]}
  encoded = tf_example.encode_example(ints, blobs)
  assert encoded == tf_bytes(ints, blobs)
  parsed = tf.train.Example.FromString(encoded).features.feature
  assert list(parsed["targets"].int64_list.value) == tokens.tolist()


def test_a_name_in_both_kinds_is_refused():
  with pytest.raises(ValueError, match="both"):
    tf_example.encode_example({"x": [1]}, {"x": [b"a"]})



@pytest.mark.parametrize("value", [1 << 63, -(1 << 63) - 1])
@pytest.mark.parametrize("count", [1, 9])
def test_values_outside_int64_are_refused(value, count):
  # Up to 8 values take the varint-by-varint path, more the compiled one: both refuse what an
  # int64 cannot hold, as TensorFlow does.
  values = [0] * (count - 1) + [value]
  with pytest.raises(OverflowError):
    tf_example.encode_example({"x": values}, {})
  with pytest.raises((ValueError, OverflowError)):
    tf_bytes({"x": values}, {})


def test_nested_and_numpy_values_are_flattened_as_numpy_flattens_them():
  for values in ([[1, 2], [3, 4]], [np.int64(5), 6], (np.array([7]), np.array([8]))):
    want = tf_example.encode_example({"x": np.asarray(values, np.int64).reshape(-1)}, {})
    assert tf_example.encode_example({"x": values}, {}) == want


@settings(max_examples=60, deadline=None)
@given(records=st.lists(st.tuples(st.lists(st.integers(0, 70000), max_size=30),
                                  st.sampled_from([0, 1, 127, 128, 10240, (1 << 14) - 1, 1 << 14,
                                                   -1, 1 << 40]),
                                  st.integers(0, 3),
                                  st.binary(max_size=140)),
                        min_size=1, max_size=12))
def test_one_encoder_reused_writes_every_record_as_tensorflow_does(records):
  # The job's encoder keeps entry prefixes by length and small ints' entries by value: records
  # of equal lengths and equal small ints reuse them, and must still be TensorFlow's bytes.
  encoder = tf_example.ExampleEncoder(["targets", "raw_bytes", "chunk"], ["example_id"])
  for tokens, raw_bytes, chunk, example_id in records * 2:
    want = tf_bytes({"targets": tokens, "raw_bytes": [raw_bytes], "chunk": [chunk]},
                    {"example_id": [example_id]})
    assert encoder(np.asarray(tokens, np.int64), [raw_bytes], [chunk], [example_id]) == want


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.integers(-(1 << 31), (1 << 31) - 1), max_size=40))
def test_int32_arrays_are_written_as_their_int64_values(values):
  # Tokens are int32: written without a conversion to int64, by a kernel compiled for int32.
  edges = [0, 127, 128, 16383, 16384, (1 << 21) - 1, 1 << 21, (1 << 31) - 1, -1, -(1 << 31)]
  values = np.asarray(values + edges, np.int32)
  assert (tf_example.encode_example({"x": values}, {})
          == tf_example.encode_example({"x": values.astype(np.int64)}, {})
          == tf_bytes({"x": values.tolist()}, {}))
  assert (tf_example.encode_example({"x": values[::2]}, {})  # a strided view
          == tf_bytes({"x": values[::2].tolist()}, {}))


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(st.lists(st.integers(-(1 << 31), (1 << 31) - 1), max_size=30),
                               st.sampled_from([0, 127, 128, 16383, 16384, 1 << 40, -1]),
                               st.binary(max_size=200)),
                     min_size=1, max_size=10),
       dtype=st.sampled_from([np.int32, np.int64, "mixed", "list"]))
def test_many_rows_at_once_are_each_rows_bytes(rows, dtype):
  # many() writes a column of int32 (or int64) arrays in one compiled call; other columns row by
  # row. Each record must be what one call writes, and TensorFlow's bytes.
  def tokens(values, k):
    if dtype == "list":
      return values
    kind = (np.int32, np.int64)[k % 2] if dtype == "mixed" else dtype
    return np.asarray(values, kind)
  encoder = tf_example.ExampleEncoder(["targets", "raw_bytes"], ["example_id"])
  columns = ([tokens(t, k) for k, (t, _, _) in enumerate(rows)], [[r] for _, r, _ in rows],
             [[b] for _, _, b in rows])
  got = encoder.many(*columns)
  assert got == [encoder(*row) for row in zip(*columns)]
  assert got == [tf_bytes({"targets": t, "raw_bytes": [r]}, {"example_id": [b]})
                 for t, r, b in rows]


def test_many_checks_its_columns():
  encoder = tf_example.ExampleEncoder(["a"], ["b"])
  with pytest.raises(ValueError, match="2 features, 1 columns"):
    encoder.many([[1]])
  with pytest.raises(ValueError):  # columns of different lengths
    encoder.many([[1], [2]], [[b"x"]])
  assert encoder.many([], []) == []


def test_many_takes_any_iterable_column_as_rows():
  # A 2-D array is a column of its rows; a generator is read once.
  encoder = tf_example.ExampleEncoder(["t"], ["id"])
  tokens = np.arange(12, dtype=np.int32).reshape(3, 4)
  ids = [[b"a"], [b"b"], [b"c"]]
  want = [encoder(row, i) for row, i in zip(tokens, ids)]
  assert encoder.many(tokens, ids) == want
  assert encoder.many((row for row in tokens), iter(ids)) == want
