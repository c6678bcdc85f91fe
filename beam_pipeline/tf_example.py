"""tf.train.Example serialization without importing TensorFlow.

Importing TensorFlow costs a worker process 5-13 s (measured here), which was the largest fixed
cost of a small job; the records need only the protobuf wire format of four messages:

  Example   { Features features = 1; }
  Features  { map<string, Feature> feature = 1; }   (map entry: key = 1, value = 2)
  Feature   { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2;
                           Int64List int64_list = 3; } }
  Int64List { repeated int64 value = 1 [packed = true]; }
  BytesList { repeated bytes value = 1; }

`encode_example` writes exactly the bytes of
`tf.train.Example(...).SerializeToString(deterministic=True)` with the pinned protobuf's upb
backend, which tests/test_tf_example.py checks against TensorFlow itself. upb sorts map keys by
their UTF-8 bytes, except that a key that is a prefix of another comes *after* it ('ab' before
'a'); protobuf's C++ backend would put 'a' first. The job's own keys are prefixes of none.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numba
import numpy as np

_LEN = 2  # wire type: length-delimited
_MASK64 = (1 << 64) - 1
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def _varint(value: int) -> bytes:
  value &= _MASK64  # int64 negatives are their 64-bit two's complement: 10 bytes
  out = bytearray()
  while value > 0x7F:
    out.append((value & 0x7F) | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


@numba.njit(cache=True, nogil=True)
def _write_varints(values, out):
  """Writes each uint64 value as a varint (7 bits per byte, low first) into out; returns the
  bytes written (out holds at least 10 per value)."""
  n = 0
  for x in values:
    while x > 0x7F:
      out[n] = (x & 0x7F) | 0x80
      x >>= 7
      n += 1
    out[n] = x
    n += 1
  return n


def _varints(values: np.ndarray) -> bytes:
  """Packed varints of int64 values (negatives as their 64-bit two's complement: 10 bytes), in
  one compiled loop: token lists hold hundreds of values per record, at every record."""
  v = np.ascontiguousarray(values, dtype=np.int64).view(np.uint64)
  if v.size == 0:
    return b""
  out = np.empty(10 * v.size, np.uint8)
  return out[:_write_varints(v, out)].tobytes()


def _length(n: int) -> bytes:
  return _SHORT_LENGTHS[n] if n < 128 else _varint(n)


_SHORT_LENGTHS = [bytes((n,)) for n in range(128)]  # one-byte varints, made once
# The tag byte of a length-delimited field, by field number: (number << 3) | wire type 2.
_TAGS = {number: bytes(((number << 3) | _LEN,)) for number in (1, 2, 3)}


def _field(number: int, payload: bytes) -> bytes:
  return _TAGS[number] + _length(len(payload)) + payload


def _packed_int64(values) -> bytes:
  """Packed varints of int64 values: up to 8 Python ints varint by varint (a record's scalars),
  anything else (longer, nested, numpy values, arrays) through numpy and one compiled loop."""
  if (isinstance(values, (list, tuple)) and len(values) <= 8
      and all(type(v) is int for v in values)):  # pylint: disable=unidiomatic-typecheck
    if any(not _INT64_MIN <= v <= _INT64_MAX for v in values):
      raise OverflowError("an int64 feature value is out of the int64 range")
    return b"".join(_varint(v) for v in values)
  return _varints(np.asarray(values, np.int64).reshape(-1))


def _upb_map_order(entry: tuple[bytes, bytes]) -> bytes:
  # 0xFF occurs in no UTF-8 string, so it sorts a key after every longer key it prefixes.
  return entry[0] + b"\xff"


class ExampleEncoder:
  """encode_example for one fixed list of feature names, called with their values in that order:
  the map's order and every key's bytes are worked out once (the job calls it once per M2
  record, hundreds of thousands of times per worker).

  Args:
    int64_names: names of the int64 list features.
    bytes_names: names of the bytes list features.
  """

  def __init__(self, int64_names: Sequence[str], bytes_names: Sequence[str]):
    names = list(int64_names) + list(bytes_names)
    if set(int64_names) & set(bytes_names):
      raise ValueError("a feature name appears in both int64_features and bytes_features")
    if len(set(names)) != len(names):
      raise ValueError(f"a feature name appears twice in {names}")
    self._num_int64 = len(int64_names)
    keys = [name.encode("utf-8") for name in names]
    self._order = sorted(range(len(names)), key=lambda i: _upb_map_order((keys[i], b"")))
    self._key_fields = [_field(1, key) for key in keys]

  def __call__(self, *values) -> bytes:
    """The serialized Example of the features' values (int64 sequences, then bytes sequences)."""
    if len(values) != len(self._key_fields):
      raise ValueError(f"{len(self._key_fields)} features, {len(values)} values given")
    parts = []
    for i in self._order:
      if i < self._num_int64:
        packed = _packed_int64(values[i])
        feature = _field(3, _field(1, packed) if packed else b"")
      else:
        feature = _field(1, b"".join(_field(1, bytes(v)) for v in values[i]))
      parts.append(_field(1, self._key_fields[i] + _field(2, feature)))
    return _field(1, b"".join(parts))


def encode_example(int64_features: Mapping[str, Sequence[int] | np.ndarray],
                   bytes_features: Mapping[str, Sequence[bytes]]) -> bytes:
  """A serialized tf.train.Example with the given int64 and bytes list features.

  Args:
    int64_features: feature name -> int64 values (any integer sequence or array).
    bytes_features: feature name -> byte strings.
  Returns:
    The bytes TensorFlow writes for the same Example with deterministic=True.
  """
  encoder = ExampleEncoder(list(int64_features), list(bytes_features))
  return encoder(*int64_features.values(), *bytes_features.values())
