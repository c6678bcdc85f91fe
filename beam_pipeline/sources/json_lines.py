"""A compiled scanner for the common shape of JSON lines: one object whose values are all strings.

C4's lines are `{"text": "...", "url": "...", "timestamp": "..."}`; parsing them with `json`
cost ~5 us per ~2.2 KB line, a fifth of what the job adds to the compressors on C4-sized
documents. `LineScanner.scan` reads a block of whole lines in one compiled call: it finds the
lines, and for each line of that shape it unescapes the wanted fields' strings into a buffer.

It is a fast path, never a second parser of record: it accepts only a strict subset of JSON
(an object, keys without escapes or non-ASCII bytes, every value a string, no wanted key twice,
well-formed UTF-8, no lone surrogate escapes) and says LINE_OTHER for anything else, which the
reader then parses with `json` as before (common.parse_json_object). On what it accepts, its
strings are json's, byte for byte: tests/test_json_lines.py drives both with random and crafted
lines. Keys are compared byte for byte with the wanted names (never by hash).
"""
from __future__ import annotations

import numba
import numpy as np

# A line's status (the third column of LineScanner.scan's `lines`).
LINE_EMPTY = 0  # no bytes (a b"\r" alone included): counted, never parsed
LINE_FIELDS = 1  # an object of strings; its wanted fields are in `fields`
LINE_OTHER = 2  # anything else: parse it with json


@numba.njit(cache=True, nogil=True)
def _is_space(c) -> bool:
  """JSON's whitespace but b"\\n", which ends the line."""
  return c == 0x20 or c == 0x09 or c == 0x0D


@numba.njit(cache=True, nogil=True)
def _hex4(block, p, end) -> int:
  """The value of 4 hex digits at block[p:p+4], or -1."""
  if p + 4 > end:
    return -1
  value = 0
  for i in range(4):
    c = block[p + i]
    if 0x30 <= c <= 0x39:
      digit = c - 0x30
    elif 0x61 <= c <= 0x66:
      digit = c - 0x57
    elif 0x41 <= c <= 0x46:
      digit = c - 0x37
    else:
      return -1
    value = value * 16 + digit
  return value


@numba.njit(cache=True, nogil=True)
def _utf8_sequence(block, p, end) -> int:
  """The length of the well-formed UTF-8 sequence of a non-ASCII lead byte at block[p] (as
  Python's strict decoder accepts it: no overlongs, surrogates or code points past U+10FFFF), or
  0 if it is not one."""
  c = block[p]
  if 0xC2 <= c <= 0xDF:
    n, low, high = 2, 0x80, 0xBF
  elif c == 0xE0:
    n, low, high = 3, 0xA0, 0xBF
  elif 0xE1 <= c <= 0xEC or c == 0xEE or c == 0xEF:
    n, low, high = 3, 0x80, 0xBF
  elif c == 0xED:
    n, low, high = 3, 0x80, 0x9F
  elif c == 0xF0:
    n, low, high = 4, 0x90, 0xBF
  elif 0xF1 <= c <= 0xF3:
    n, low, high = 4, 0x80, 0xBF
  elif c == 0xF4:
    n, low, high = 4, 0x80, 0x8F
  else:
    return 0
  if p + n > end:
    return 0
  second = block[p + 1]
  if second < low or second > high:
    return 0
  for i in range(2, n):
    if block[p + i] < 0x80 or block[p + i] > 0xBF:
      return 0
  return n


@numba.njit(cache=True, nogil=True)
def _put_code_point(out, o, cp) -> int:
  """Writes code point `cp` (not a surrogate) as UTF-8 at out[o]; returns the next o."""
  if cp < 0x80:
    out[o] = cp
    return o + 1
  if cp < 0x800:
    out[o] = 0xC0 | (cp >> 6)
    out[o + 1] = 0x80 | (cp & 0x3F)
    return o + 2
  if cp < 0x10000:
    out[o] = 0xE0 | (cp >> 12)
    out[o + 1] = 0x80 | ((cp >> 6) & 0x3F)
    out[o + 2] = 0x80 | (cp & 0x3F)
    return o + 3
  out[o] = 0xF0 | (cp >> 18)
  out[o + 1] = 0x80 | ((cp >> 12) & 0x3F)
  out[o + 2] = 0x80 | ((cp >> 6) & 0x3F)
  out[o + 3] = 0x80 | (cp & 0x3F)
  return o + 4


_ONES = np.uint64(0x0101010101010101)
_HIGHS = np.uint64(0x8080808080808080)
_QUOTES = np.uint64(0x2222222222222222)
_BACKSLASHES = np.uint64(0x5C5C5C5C5C5C5C5C)
_NEWLINES = np.uint64(0x0A0A0A0A0A0A0A0A)
_SPACES = np.uint64(0x2020202020202020)


@numba.njit(cache=True, nogil=True)
def _has_zero_byte(v):
  """Nonzero iff one of the 8 bytes of v is 0 (exact: the classic SWAR test)."""
  return (v - _ONES) & ~v & _HIGHS


@numba.njit(cache=True, nogil=True)
def _stops_string(c, utf8_checked) -> bool:
  return c == 0x22 or c == 0x5C or c < 0x20 or (c >= 0x80 and not utf8_checked)


@numba.njit(cache=True, nogil=True)
def _next_string_stop(block, words, p, end, utf8_checked) -> int:
  """The first position from p on (before end) of a byte a string's plain run stops at (a quote,
  a backslash, a control character, or a non-ASCII byte unless the block's UTF-8 was checked),
  or end; 8 bytes at a time where it can (words: block's bytes as uint64)."""
  while p < end and (p & 7) != 0:
    if _stops_string(block[p], utf8_checked):
      return p
    p += 1
  while p + 8 <= end:
    v = words[p >> 3]
    stops = (_has_zero_byte(v ^ _QUOTES) | _has_zero_byte(v ^ _BACKSLASHES)
             | ((v - _SPACES) & ~v & _HIGHS))  # a byte < 0x20 (exact for any: see above)
    if not utf8_checked:
      stops |= v & _HIGHS
    if stops:
      break
    p += 8
  while p < end:
    if _stops_string(block[p], utf8_checked):
      return p
    p += 1
  return end


@numba.njit(cache=True, nogil=True)
def _next_newline(block, words, p, end) -> int:
  """The position of the first b"\\n" from p on, or end."""
  while p < end and (p & 7) != 0:
    if block[p] == 0x0A:
      return p
    p += 1
  while p + 8 <= end:
    if _has_zero_byte(words[p >> 3] ^ _NEWLINES):
      break
    p += 8
  while p < end:
    if block[p] == 0x0A:
      return p
    p += 1
  return end


@numba.njit(cache=True, nogil=True)
def _copy(source, target) -> None:
  # A loop over views: numba's slice assignment was 13x slower here, and a loop over offset
  # indices 5x (each index checked for wraparound).
  for i in range(len(source)):
    target[i] = source[i]


@numba.njit(cache=True, nogil=True)
def _string(block, words, p, end, out, o, utf8_checked):
  """Unescapes the JSON string whose opening quote is block[p-1] into out[o:]; returns (the
  position after its closing quote, the end of its bytes in out), or (-1, -1) if it is outside
  the fast path's subset (see the module docstring)."""
  while True:
    q = _next_string_stop(block, words, p, end, utf8_checked)
    _copy(block[p:q], out[o:o + q - p])
    o += q - p
    p = q
    if p >= end:
      return -1, -1
    c = block[p]
    if c == 0x22:  # "
      return p + 1, o
    if c == 0x5C:  # backslash
      if p + 1 >= end:
        return -1, -1
      e = block[p + 1]
      p += 2
      if e == 0x22 or e == 0x5C or e == 0x2F:
        out[o] = e
      elif e == 0x6E:
        out[o] = 0x0A
      elif e == 0x74:
        out[o] = 0x09
      elif e == 0x72:
        out[o] = 0x0D
      elif e == 0x62:
        out[o] = 0x08
      elif e == 0x66:
        out[o] = 0x0C
      elif e == 0x75:  # u
        cp = _hex4(block, p, end)
        if cp < 0:
          return -1, -1
        p += 4
        if 0xDC00 <= cp <= 0xDFFF:
          return -1, -1  # a lone low surrogate: json keeps it, no UTF-8 can hold it
        if 0xD800 <= cp <= 0xDBFF:
          if p + 6 > end or block[p] != 0x5C or block[p + 1] != 0x75:
            return -1, -1
          low = _hex4(block, p + 2, end)
          if low < 0xDC00 or low > 0xDFFF:
            return -1, -1
          p += 6
          cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00)
        o = _put_code_point(out, o, cp)
        continue
      else:
        return -1, -1
      o += 1
    elif c < 0x20:
      return -1, -1  # a raw control character: json (strict) refuses it
    else:  # non-ASCII in a block whose UTF-8 is not known to be valid
      n = _utf8_sequence(block, p, end)
      if n == 0:
        return -1, -1
      _copy(block[p:p + n], out[o:o + n])
      o += n
      p += n


@numba.njit(cache=True, nogil=True)
def _skip_space(block, p, end) -> int:
  while p < end and _is_space(block[p]):
    p += 1
  return p


@numba.njit(cache=True, nogil=True)
def _line(block, words, start, size, names, name_ends, fields, row, out, o, utf8_checked):
  """Parses the line starting at block[start] as an object of strings, writing its wanted
  fields' (start, end) in out into fields[row] (-1 where absent); returns (the position of its
  b"\\n", or the block's size; the next free byte of out), or (-1, -1) for LINE_OTHER. No b"\\n" is
  ever passed: it is neither whitespace here nor allowed raw in a string."""
  p = _skip_space(block, start, size)
  if p >= size or block[p] != 0x7B:  # {
    return -1, -1
  p = _skip_space(block, p + 1, size)
  if p < size and block[p] == 0x7D:  # } : an empty object
    p += 1
  else:
    while True:
      if p >= size or block[p] != 0x22:
        return -1, -1
      key_start = p + 1
      p = key_start
      while p < size and block[p] != 0x22:
        c = block[p]
        if c == 0x5C or c < 0x20 or c >= 0x80:  # escaped or non-ASCII keys go to json
          return -1, -1
        p += 1
      if p >= size:
        return -1, -1
      key_end = p
      p = _skip_space(block, p + 1, size)
      if p >= size or block[p] != 0x3A:  # :
        return -1, -1
      p = _skip_space(block, p + 1, size)
      if p >= size or block[p] != 0x22:
        return -1, -1  # a value other than a string
      value_start = o
      p, o = _string(block, words, p + 1, size, out, o, utf8_checked)
      if p < 0:
        return -1, -1
      wanted = -1
      name_start = 0
      for f in range(len(name_ends)):
        if name_ends[f] - name_start == key_end - key_start:
          same = True
          for i in range(key_end - key_start):
            if names[name_start + i] != block[key_start + i]:
              same = False
              break
          if same:
            wanted = f
            break
        name_start = name_ends[f]
      if wanted < 0:
        o = value_start  # an unwanted value's bytes are not kept
      elif fields[row, wanted, 0] >= 0:
        return -1, -1  # a wanted key twice: json keeps the last; the fast path leaves it to json
      else:
        fields[row, wanted, 0] = value_start
        fields[row, wanted, 1] = o
      p = _skip_space(block, p, size)
      if p >= size:
        return -1, -1
      if block[p] == 0x2C:  # ,
        p = _skip_space(block, p + 1, size)
        continue
      if block[p] != 0x7D:
        return -1, -1
      p += 1
      break
  p = _skip_space(block, p, size)
  if p < size and block[p] != 0x0A:
    return -1, -1
  return p, o


@numba.njit(cache=True, nogil=True)
def _count_newlines(block, words) -> int:
  size = len(block)
  count = 0
  low7 = np.uint64(0x7F7F7F7F7F7F7F7F)
  for w in range(len(words)):
    y = words[w] ^ _NEWLINES
    zeros = ~(((y & low7) + low7) | y | low7)  # exactly the zero bytes' top bits
    count += ((zeros >> np.uint64(7)) * _ONES) >> np.uint64(56)
  for p in range(len(words) * 8, size):
    if block[p] == 0x0A:
      count += 1
  return count


@numba.njit(cache=True, nogil=True)
def _scan(block, words, names, name_ends, utf8_checked):
  """See LineScanner.scan."""
  size = len(block)
  count = _count_newlines(block, words)
  if size and block[size - 1] != 0x0A:
    count += 1
  lines = np.empty((count, 3), dtype=np.int64)
  fields = np.full((count, len(name_ends), 2), -1, dtype=np.int64)
  out = np.empty(size, dtype=np.uint8)
  n = 0
  start = 0
  o = 0
  while start < size:
    newline, next_o = _line(block, words, start, size, names, name_ends, fields, n, out, o,
                            utf8_checked)
    if newline >= 0:
      status = LINE_FIELDS
      o = next_o
    else:
      fields[n, :, :] = -1
      newline = _next_newline(block, words, start, size)
      status = LINE_OTHER
    # A b"\r" before b"\n" is part of the terminator (and a line of it alone is empty).
    end = newline - 1 if newline > start and block[newline - 1] == 0x0D else newline
    if end == start:
      status = LINE_EMPTY
    lines[n, 0] = start
    lines[n, 1] = end
    lines[n, 2] = status
    n += 1
    start = newline + 1
  return lines[:n], fields[:n], out


class LineScanner:
  """Scans blocks of JSON lines for the string values of the keys `names` (ASCII bytes)."""

  def __init__(self, names: tuple[bytes, ...]):
    self._name_bytes = np.frombuffer(b"".join(names), dtype=np.uint8)
    self._name_ends = np.cumsum([len(n) for n in names], dtype=np.int64)

  def scan(self, block):
    """Scans a block of whole lines (bytes or a memoryview: each line ended by b"\\n", but
    for the last line of a file).

    Returns:
      (lines, fields, out): `lines` int64[n, 3] holds each line's (start, end) in `block`
      (bytes, its terminator excluded) and status (LINE_EMPTY, LINE_FIELDS, LINE_OTHER); for a
      LINE_FIELDS line, `fields[line, f]` is the (start, end) in `out` (bytes) of the UTF-8 of
      the string that key names[f] holds, or (-1, -1) if the object has no such key.
    """
    data = np.frombuffer(block, dtype=np.uint8)
    try:  # one pass in C (~0.05 ns per ASCII byte), so that the scanner need not check UTF-8
      str(block, "utf-8")
      utf8_checked = True
    except UnicodeDecodeError:
      utf8_checked = False
    return _scan(data, data[:len(data) // 8 * 8].view(np.uint64), self._name_bytes,
                 self._name_ends, utf8_checked)
