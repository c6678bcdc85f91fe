"""Tests for beam_pipeline.sources.json_lines: the compiled scanner against json, the reference.

Whatever line the scanner says is an object of strings (LINE_FIELDS) must be one to json, with
the very same strings; any other line is left to json (LINE_OTHER), so the scanner may decline
more than it must, never accept what json refuses or read it differently. Line spans must be
what the line splitter gives."""
from __future__ import annotations

import json

import hypothesis
from hypothesis import strategies as st
import numpy as np
import pytest

from beam_pipeline.sources import json_lines

NAMES = ("text", "url", "timestamp")
SCANNER = json_lines.LineScanner(tuple(n.encode() for n in NAMES))


def _reference(line: bytes):
  """What json makes of a line: None if it is not an object; else, per wanted name, its str
  value, None where absent, or ... where the value is not a str that UTF-8 can hold."""
  try:
    obj = json.loads(line.decode("utf-8"))
  except (UnicodeDecodeError, ValueError, RecursionError):
    return None
  if not isinstance(obj, dict):
    return None
  values = []
  for name in NAMES:
    value = obj.get(name)
    if value is not None and not isinstance(value, str):
      value = ...
    elif value is not None:
      try:
        value.encode("utf-8")
      except UnicodeEncodeError:
        value = ...
    values.append(value)
  return values


def _split_lines(block: bytes) -> list[bytes]:
  lines = block.split(b"\n")
  if lines and lines[-1] == b"":
    lines.pop()
  return [l[:-1] if l.endswith(b"\r") else l for l in lines]


def _check_block(block: bytes) -> list[int]:
  """Scans `block`, checks every line against json and the splitter; returns the statuses."""
  lines, fields, out = SCANNER.scan(block)
  expected_lines = _split_lines(block)
  assert len(lines) == len(expected_lines)
  out = out.tobytes()
  statuses = []
  for (start, end, status), spans, expected in zip(lines.tolist(), fields.tolist(),
                                                   expected_lines):
    assert block[start:end] == expected
    statuses.append(status)
    if status == json_lines.LINE_EMPTY:
      assert expected == b""
      continue
    assert expected != b""
    if status == json_lines.LINE_OTHER:
      continue
    assert status == json_lines.LINE_FIELDS
    reference = _reference(expected)
    assert reference is not None, expected
    got = [out[a:b].decode("utf-8") if a >= 0 else None for a, b in spans]
    assert got == reference, expected
  return statuses


def test_c4_lines_take_the_fast_path_with_json_strings():
  # What C4's own files hold (raw UTF-8), and the same escaped to ASCII.
  records = [{"text": ("Line one.\nLine two, \"quoted\" \\ back\tslash "
                       "\u00e9\u65e5\U0001F600\x00\x7f"),
              "url": "https://example.com/a?b=c&d=/e", "timestamp": "2019-04-25T12:57:54Z"},
             {"url": "", "timestamp": "", "text": ""}]
  block = b"".join(json.dumps(r, ensure_ascii=ascii).encode() + b"\n"
                   for r in records for ascii in (False, True))
  assert _check_block(block) == [json_lines.LINE_FIELDS] * 4


@pytest.mark.parametrize("line, status", [
    (b'{"text":"a","url":"u","timestamp":"t"}', json_lines.LINE_FIELDS),
    (b' \t{ "text" : "a" , "other" : "x" } \t\r', json_lines.LINE_FIELDS),  # spaces, \r
    (b'{}', json_lines.LINE_FIELDS),  # no wanted key: the reader's parser says which is missing
    (b'{"text":"a","text":"b"}', json_lines.LINE_OTHER),  # json keeps the last: left to json
    (b'{"t\\u0065xt":"a"}', json_lines.LINE_OTHER),  # an escaped key, which json reads as text
    (b'{"t\xc3\xa9xt":"a"}', json_lines.LINE_OTHER),  # a non-ASCII key
    (b'{"text":"\\ud800"}', json_lines.LINE_OTHER),  # lone surrogates: json keeps them
    (b'{"text":"\\udc00"}', json_lines.LINE_OTHER),
    (b'{"text":"\\ud800\\u0041"}', json_lines.LINE_OTHER),
    (b'{"text":"\\ud83d\\ude00"}', json_lines.LINE_FIELDS),  # a pair is one code point
    (b'{"text":"\\uD83D\\uDE00\\u00E9"}', json_lines.LINE_FIELDS),  # upper-case hex
    (b'{"text":"\\u12"}', json_lines.LINE_OTHER),
    (b'{"text":"\\x41"}', json_lines.LINE_OTHER),
    (b'{"text":"a\x01"}', json_lines.LINE_OTHER),  # a raw control character
    (b'{"text":"a\tb"}', json_lines.LINE_OTHER),
    (b'{"text":"\xff"}', json_lines.LINE_OTHER),  # not UTF-8
    (b'{"text":"\xc0\x80"}', json_lines.LINE_OTHER),  # overlong
    (b'{"text":"\xed\xa0\x80"}', json_lines.LINE_OTHER),  # an encoded surrogate
    (b'{"text":"\xf4\x90\x80\x80"}', json_lines.LINE_OTHER),  # past U+10FFFF
    (b'{"text":"\xe6\x97"}', json_lines.LINE_OTHER),  # truncated
    (b'\xef\xbb\xbf{"text":"a"}', json_lines.LINE_OTHER),  # a BOM
    (b'{"text":"a"} x', json_lines.LINE_OTHER),  # trailing data
    (b'{"text":"a"}{}', json_lines.LINE_OTHER),
    (b'{"text":"a",}', json_lines.LINE_OTHER),
    (b'{"text":"a" "url":"u"}', json_lines.LINE_OTHER),
    (b'{"text":"a"', json_lines.LINE_OTHER),
    (b'{"text":"a', json_lines.LINE_OTHER),
    (b'{"text":"a\\', json_lines.LINE_OTHER),
    (b'{"text":1}', json_lines.LINE_OTHER),  # a value other than a string goes to json
    (b'{"n":[1,2],"text":"a"}', json_lines.LINE_OTHER),
    (b'{"n":NaN,"text":"a"}', json_lines.LINE_OTHER),
    (b'["text","a"]', json_lines.LINE_OTHER),
    (b'"text"', json_lines.LINE_OTHER),
    (b'{"text":"a"}\x0c', json_lines.LINE_OTHER),  # form feed is not JSON whitespace
    (b'\x0b{"text":"a"}', json_lines.LINE_OTHER),
    (b'{"text"\r:\r"a"\r}', json_lines.LINE_FIELDS),  # \r is
])
def test_crafted_lines(line, status):
  assert _check_block(line + b"\n") == [status]
  assert _check_block(line) == [status]  # the last line of a file, unterminated


def test_every_byte_after_a_backslash_and_in_a_string_reads_as_json_reads_it():
  for byte in range(256):
    escaped = b'{"text":"a\\' + bytes([byte]) + b'b"}'
    raw = b'{"text":"a' + bytes([byte]) + b'b"}'
    statuses = _check_block(escaped + b"\n" + raw)
    assert (statuses[0] == json_lines.LINE_FIELDS) == (byte in b'"\\/bfnrt')
    # (a raw backslash makes "\\b", an escape; a lone byte past 0x7F is not UTF-8)
    assert (statuses[1] == json_lines.LINE_FIELDS) == (0x20 <= byte < 0x80
                                                       and byte != 0x22)


def test_empty_lines_and_terminators():
  block = b'\n\r\n{"text":"a"}\r\n\r\n \n{"url":"u"}'
  assert _check_block(block) == [
      json_lines.LINE_EMPTY, json_lines.LINE_EMPTY, json_lines.LINE_FIELDS,
      json_lines.LINE_EMPTY, json_lines.LINE_OTHER, json_lines.LINE_FIELDS]
  assert _check_block(b"") == []
  assert _check_block(b"\r") == [json_lines.LINE_EMPTY]


def test_a_line_declined_midway_leaves_the_next_lines_intact():
  # A string the scanner gives up on (an escape it leaves to json) must not spill into the next
  # line's output or position.
  block = (b'{"text":"' + b"x" * 100 + b'\\ud800"}\n{"text":"' + b"y" * 50 + b'"}\n'
           b'{"text":"\\\n{"text":"z"}\n')
  assert _check_block(block) == [json_lines.LINE_OTHER, json_lines.LINE_FIELDS,
                                 json_lines.LINE_OTHER, json_lines.LINE_FIELDS]


def test_a_key_is_compared_byte_for_byte_never_by_hash():
  # A key that collides with "url" in orjson's key cache (which matched keys by hash alone).
  colliding = "tTELAYOxpu7lxfvFY4gfGhV77TP32Kk8pjliZ6qQPvwrnjUbspjLdr7cj99FoBEN"
  block = (json.dumps({"text": "t", "url": "u", "timestamp": "t"}) + "\n"
           + json.dumps({"text": "t", colliding: "x", "timestamp": "t"}) + "\n"
           + json.dumps({"text": "t", "ur": "x", "urll": "y", "URL": "z"})).encode()
  lines, fields, _ = SCANNER.scan(block)
  assert lines[:, 2].tolist() == [json_lines.LINE_FIELDS] * 3
  assert fields[1, 1].tolist() == [-1, -1] and fields[2, 1].tolist() == [-1, -1]
  _check_block(block)


def test_blocks_with_invalid_utf8_still_check_every_other_line():
  # One bad line means the block is not valid UTF-8: the scanner then checks each sequence
  # itself, and the other lines, non-ASCII included, still take the fast path.
  good = json.dumps({"text": "caf\u00e9 \u65e5\u672c \U0001F600"}, ensure_ascii=False).encode()
  block = good + b"\n" + b'{"text":"\xe9"}\n' + good
  assert _check_block(block) == [json_lines.LINE_FIELDS, json_lines.LINE_OTHER,
                                 json_lines.LINE_FIELDS]


_KEYS = st.sampled_from(["text", "url", "timestamp", "t", "texts", "", "t\u00e9xt", "a\"b",
                         "a\\b", "\u65e5"])
_STRINGS = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF,
                                          exclude_categories=()),  # surrogates too
                   max_size=40)
_VALUES = st.one_of(_STRINGS, _STRINGS, _STRINGS, st.integers(), st.none(), st.booleans(),
                    st.lists(st.integers(), max_size=2), st.floats(allow_nan=True))
_OBJECTS = st.dictionaries(_KEYS, _VALUES, max_size=5)


@hypothesis.settings(max_examples=400, deadline=None)
@hypothesis.given(objects=st.lists(st.tuples(_OBJECTS, st.booleans(), st.sampled_from(
    [(",", ":"), (", ", ": "), (" ,\t", " :\r ")]), st.sampled_from([b"\n", b"\r\n"])),
    min_size=1, max_size=6))
def test_random_objects_read_as_json_reads_them(objects):
  block = b"".join(json.dumps(obj, ensure_ascii=ascii, separators=separators).encode(
      "utf-8", "surrogatepass") + terminator
                   for obj, ascii, separators, terminator in objects)
  statuses = _check_block(block)
  for (obj, *_), status in zip(objects, statuses):
    plain = all(isinstance(v, str) for v in obj.values()) and not any(
        "\\" in k or '"' in k or not k.isascii() for k in obj) and not any(
        0xD800 <= ord(c) <= 0xDFFF for v in obj.values() for c in v)
    if plain:  # an object of strings without surrogates or odd keys takes the fast path
      assert status == json_lines.LINE_FIELDS, obj


_MUTATIONS = st.lists(st.tuples(st.integers(0, 200), st.sampled_from(
    [b'"', b"\\", b"{", b"}", b":", b",", b" ", b"\t", b"\r", b"\n", b"\x00", b"\x1f", b"\x7f",
     b"\x80", b"\xc3", b"\xe6\x97", b"\xed\xa0\x80", b"\xf0\x9f\x98\x80", b"\xff", b"u", b"n",
     b"d8", b"0", b"\\u", b"\\ud83d", b"\\ude00", b"[", b"]", b"1", b"e", b"\xef\xbb\xbf"]),
    st.booleans()), max_size=4)


@hypothesis.settings(max_examples=600, deadline=None)
@hypothesis.given(obj=_OBJECTS, mutations=_MUTATIONS, ascii=st.booleans())
def test_mutated_lines_are_never_read_otherwise_than_json_reads_them(obj, mutations, ascii):
  line = bytearray(json.dumps(obj, ensure_ascii=ascii).encode("utf-8", "surrogatepass"))
  for position, piece, replace in mutations:
    position = min(position, len(line))
    line[position:position + (len(piece) if replace else 0)] = piece
  _check_block(bytes(line))
  _check_block(bytes(line) + b"\n" + json.dumps({"text": "after"}).encode())


@hypothesis.settings(max_examples=400, deadline=None)
@hypothesis.given(raw=st.binary(max_size=12))
def test_utf8_checks_match_pythons_decoder(raw):
  # In a block of valid lines the decoder vouches for UTF-8; with one bad line anywhere the
  # scanner checks each sequence: either way it must agree with Python's strict decoder.
  line = b'{"text":"' + raw.replace(b'"', b"").replace(b"\\", b"").replace(b"\n", b"") + b'"}'
  for block in (line, line + b'\n{"text":"\xff"}'):
    statuses = _check_block(block)
    try:
      line.decode("utf-8")
      valid = not any(c < 0x20 for c in line)
    except UnicodeDecodeError:
      valid = False
    assert (statuses[0] == json_lines.LINE_FIELDS) == valid


def test_scanner_reads_a_memoryview_and_long_blocks():
  rng = np.random.default_rng(0)
  records = [{"text": "".join(chr(c) for c in rng.integers(32, 0x3000, size=int(n))),
              "url": f"u{i}", "timestamp": "t"}
             for i, n in enumerate(rng.integers(0, 3000, size=300))]
  block = b"".join(json.dumps(r, ensure_ascii=bool(i % 2)).encode() + b"\n"
                   for i, r in enumerate(records))
  lines, fields, out = SCANNER.scan(memoryview(block)[:])
  assert (lines[:, 2] == json_lines.LINE_FIELDS).all()
  out = out.tobytes()
  assert [out[a:b].decode() for a, b in fields[:, 0].tolist()] == [r["text"] for r in records]
