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
  """Writes each int64 value as a varint (7 bits per byte, low first; a negative one as its
  64-bit two's complement, 10 bytes) into out; returns the bytes written (out holds at least 10
  per value)."""
  n = 0
  for i in range(values.size):
    x = values[i]
    if 0 <= x < 0x200000:
      # Tokens (up to 21 bits in every vocabulary here) as three bytes written whatever their
      # length, of which the varint's 1 to 3 are kept (the next value writes over the rest): no
      # branch on the length, which a loop mispredicted at every other token of a 16-bit
      # vocabulary (2.8x slower). int64 throughout: numba types uint64 mixed with int64 as float.
      more1 = np.int64(x >= 0x80)
      more2 = np.int64(x >= 0x4000)
      out[n] = np.uint8((x & 0x7F) | (more1 << 7))
      out[n + 1] = np.uint8(((x >> 7) & 0x7F) | (more2 << 7))
      out[n + 2] = np.uint8(x >> 14)
      n += 1 + more1 + more2
    else:
      u = np.uint64(x)
      while u > np.uint64(0x7F):
        out[n] = np.uint8((u & np.uint64(0x7F)) | np.uint64(0x80))
        u >>= np.uint64(7)
        n += 1
      out[n] = np.uint8(u)
      n += 1
  return n


@numba.njit(cache=True, nogil=True)
def _write_varint_rows(values, row_ends, out, out_ends):
  """_write_varints of many rows at once: row r is values[row_ends[r-1]:row_ends[r]] (from 0 for
  the first); its varints end at out_ends[r]. Returns the bytes written."""
  n = 0
  start = 0
  for r in range(row_ends.size):
    n += _write_varints(values[start:row_ends[r]], out[n:])
    out_ends[r] = n
    start = row_ends[r]
  return n


def _varints(values: np.ndarray) -> bytes:
  """Packed varints of int32 or int64 values (negatives as their 64-bit two's complement: 10
  bytes; other dtypes are read as int64), in one compiled loop: token lists hold hundreds of
  values per record, at every record."""
  # int32 (every method's token dtype) is written as it is, the kernel compiled for it as for
  # int64: converting to int64 cost 0.8 us of a 512-token record's 2.7.
  v = np.ascontiguousarray(values, dtype=np.int32 if values.dtype == np.int32 else np.int64)
  if v.size == 0:
    return b""
  out = np.empty(10 * v.size, np.uint8)
  return out[:_write_varints(v, out)].tobytes()


def _length(n: int) -> bytes:
  if n < 128:
    return _SHORT_LENGTHS[n]
  if n < 0x4000:  # two bytes (a record's token list): inline, _varint's loop cost ~0.8 us
    return bytes(((n & 0x7F) | 0x80, n >> 7))
  return _varint(n)


_SHORT_LENGTHS = [bytes((n,)) for n in range(128)]  # one-byte varints, made once
# The tag byte of a length-delimited field, by field number: (number << 3) | wire type 2.
_TAGS = {number: bytes(((number << 3) | _LEN,)) for number in (1, 2, 3)}


def _field(number: int, payload: bytes) -> bytes:
  return _TAGS[number] + _length(len(payload)) + payload


def _packed_int64(values) -> bytes:
  """Packed varints of int64 values: up to 8 Python ints varint by varint (a record's scalars),
  anything else (longer, nested, numpy values, arrays) through numpy and one compiled loop."""
  if isinstance(values, (list, tuple)) and len(values) <= 8:
    parts = []
    for value in values:
      if type(value) is not int:  # pylint: disable=unidiomatic-typecheck
        break
      if not _INT64_MIN <= value <= _INT64_MAX:
        raise OverflowError("an int64 feature value is out of the int64 range")
      parts.append(_SHORT_LENGTHS[value] if 0 <= value < 128 else _varint(value))
    else:
      return b"".join(parts)
  array = values if isinstance(values, np.ndarray) else np.asarray(values, np.int64)
  return _varints(array.reshape(-1))  # which picks the dtype it writes (int32 or int64)


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
    self._prefixes = [{} for _ in names]  # by feature: its list's length in bytes -> prefix
    self._int_entries = [{} for _ in names]  # by int64 feature: one small int -> its entry

  def __call__(self, *values) -> bytes:
    """The serialized Example of the features' values (int64 sequences, then bytes sequences)."""
    if len(values) != len(self._key_fields):
      raise ValueError(f"{len(self._key_fields)} features, {len(values)} values given")
    return self._encode(values, ())

  def many(self, *columns) -> list[bytes]:
    """The serialized Examples of many rows, as [self(*row) for row in zip(*columns)]: columns[i]
    (any iterable) holds feature i's value in every row, the same number of rows in every column
    (ValueError otherwise). An int64 feature whose values are all 1-D int32 (or all 1-D int64)
    arrays, as a batch's token lists, is varint-encoded in one compiled call for every row (a
    call per record cost ~1 us of its 5.6)."""
    if len(columns) != len(self._key_fields):
      raise ValueError(f"{len(self._key_fields)} features, {len(columns)} columns given")
    columns = [list(column) for column in columns]
    rows = [tuple(row) for row in zip(*columns, strict=True)]
    packed = [_packed_rows(columns[i]) if i < self._num_int64 else None
              for i in range(len(columns))]
    return [self._encode(row, [p and p[r] for p in packed]) for r, row in enumerate(rows)]

  def _encode(self, values, packed) -> bytes:
    """The serialized Example of `values`; packed[i], where given and not None, is int64 feature
    i's packed varints, already written."""
    # A feature's map entry is a prefix (headers and key) that depends only on the length of its
    # list's bytes, then those bytes: prefixes are kept by length, and the entries of one small
    # int by its value (a record's chunk and raw_bytes): 10.1 -> 6.2 us per M2 record here. The
    # parts are joined once, so a token list's varints are copied once.
    parts = []
    size = 0
    for i in self._order:
      value = values[i]
      if i < self._num_int64:
        if (type(value) is list and len(value) == 1  # pylint: disable=unidiomatic-typecheck
            and type(value[0]) is int and 0 <= value[0] < _CACHED_INTS):
          cached = self._int_entries[i]
          entry = cached.get(value[0])
          if entry is None:
            items = _int64_list(_packed_int64(value))
            entry = cached[value[0]] = self._prefix(i, len(items)) + items
          parts.append(entry)
          size += len(entry)
          continue
        varints = packed[i] if packed else None
        if varints is None:
          varints = _packed_int64(value)
        head = _packed_head(len(varints))
        prefix = self._prefix(i, len(head) + len(varints))
        parts += (prefix, head, varints)
        size += len(prefix) + len(head) + len(varints)
      else:
        items = b"".join([_ITEM_TAG + _length(len(item)) + item for item in map(bytes, value)])
        prefix = self._prefix(i, len(items))
        parts += (prefix, items)
        size += len(prefix) + len(items)
    return b"".join([_FEATURES_TAG, _length(size), *parts])  # Example.features

  def _prefix(self, i: int, items_bytes: int) -> bytes:
    """Feature i's map entry in Features.feature up to its list's fields (`items_bytes` bytes)."""
    prefix = self._prefixes[i].get(items_bytes)
    if prefix is None:
      kind = _INT64_LIST_TAG if i < self._num_int64 else _BYTES_LIST_TAG
      feature_bytes = len(kind) + len(_length(items_bytes)) + items_bytes
      value_header = _VALUE_TAG + _length(feature_bytes) + kind + _length(items_bytes)
      entry_bytes = len(self._key_fields[i]) + len(value_header) + items_bytes
      prefix = self._prefixes[i][items_bytes] = (
          _ENTRY_TAG + _length(entry_bytes) + self._key_fields[i] + value_header)
    return prefix


def _packed_rows(values) -> list[memoryview] | None:
  """Each row's packed varints (as _packed_int64 writes them) when every row is a 1-D int32
  array, or every row a 1-D int64 array, written in one compiled call; None otherwise."""
  if not values or any(type(v) is not np.ndarray or v.ndim != 1  # pylint: disable=unidiomatic-typecheck
                       for v in values):
    return None
  dtype = values[0].dtype
  if dtype not in (np.int32, np.int64) or any(v.dtype != dtype for v in values):
    return None
  joined = np.concatenate(values)
  row_ends = np.cumsum([v.size for v in values], dtype=np.int64)
  out = np.empty(10 * joined.size, np.uint8)
  out_ends = np.empty(len(values), np.int64)
  _write_varint_rows(joined, row_ends, out, out_ends)
  written = memoryview(out)  # sliced, never copied: ExampleEncoder joins the slices once
  starts = [0, *out_ends[:-1].tolist()]
  return [written[a:b] for a, b in zip(starts, out_ends.tolist())]


def _packed_head(varint_bytes: int) -> bytes:
  """The tag and length of an Int64List's one packed field of `varint_bytes` bytes; nothing when
  there are no values (the field is then absent)."""
  return _PACKED_TAG + _length(varint_bytes) if varint_bytes else b""


def _int64_list(packed: bytes) -> bytes:
  """An Int64List's fields: its one packed field, absent when there are no values."""
  return _packed_head(len(packed)) + packed


# Ints below this are kept as whole map entries by ExampleEncoder (at most this many per feature).
_CACHED_INTS = 1 << 14
# The tags of the length-delimited fields written above, by message.
_FEATURES_TAG = _TAGS[1]  # Example.features
_ENTRY_TAG = _TAGS[1]  # Features.feature (a map entry)
_VALUE_TAG = _TAGS[2]  # the map entry's value
_BYTES_LIST_TAG, _INT64_LIST_TAG = _TAGS[1], _TAGS[3]  # Feature.bytes_list, .int64_list
_PACKED_TAG = _ITEM_TAG = _TAGS[1]  # Int64List.value (packed), BytesList.value


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
