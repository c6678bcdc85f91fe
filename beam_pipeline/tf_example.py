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


def _field(number: int, payload: bytes) -> bytes:
  return _varint((number << 3) | _LEN) + _varint(len(payload)) + payload


def _upb_map_order(entry: tuple[bytes, bytes]) -> bytes:
  # 0xFF occurs in no UTF-8 string, so it sorts a key after every longer key it prefixes.
  return entry[0] + b"\xff"


def encode_example(int64_features: Mapping[str, Sequence[int] | np.ndarray],
                   bytes_features: Mapping[str, Sequence[bytes]]) -> bytes:
  """A serialized tf.train.Example with the given int64 and bytes list features.

  Args:
    int64_features: feature name -> int64 values (any integer sequence or array).
    bytes_features: feature name -> byte strings.
  Returns:
    The bytes TensorFlow writes for the same Example with deterministic=True.
  """
  if set(int64_features) & set(bytes_features):
    raise ValueError("a feature name appears in both int64_features and bytes_features")
  entries = []
  for name, values in int64_features.items():
    packed = _varints(np.asarray(values, np.int64).reshape(-1))
    int64_list = _field(1, packed) if packed else b""
    entries.append((name.encode("utf-8"), _field(3, int64_list)))
  for name, values in bytes_features.items():
    bytes_list = b"".join(_field(1, bytes(v)) for v in values)
    entries.append((name.encode("utf-8"), _field(1, bytes_list)))
  features = b"".join(_field(1, _field(1, key) + _field(2, feature))
                      for key, feature in sorted(entries, key=_upb_map_order))
  return _field(1, features)
