"""What every reader shares: names, reason codes, dead letters, counters, JSON field checks."""
from __future__ import annotations

import json
import os

import apache_beam as beam
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems

SOURCES_NAMESPACE = "sources"
DEAD_LETTER_TAG = "dead_letter"
RECORDS_TAG = "records"
SOURCES = ("default", "c4_json", "tfds", "jsonl", "text")
C4_FIELDS = ("text", "url", "timestamp")

# Reason codes used in dead-letter records. Field-specific codes are built from
# these templates with the field name, e.g. "missing_text", "url_not_string".
REASON_CORRUPT = "corrupt_compressed_stream"
REASON_INVALID_UTF8 = "invalid_utf8"
REASON_INVALID_JSON = "invalid_json"
REASON_NOT_OBJECT = "not_a_json_object"
REASON_MISSING = "missing_{field}"
REASON_NOT_STRING = "{field}_not_string"
REASON_NOT_ENCODABLE = "{field}_not_utf8_encodable"
REASONS = (REASON_CORRUPT, REASON_INVALID_UTF8, REASON_INVALID_JSON,
           REASON_NOT_OBJECT, REASON_MISSING, REASON_NOT_STRING,
           REASON_NOT_ENCODABLE)

INVALID_UTF8_POLICIES = ("dead_letter", "replace")

# Raw bytes read from the filesystem per call: large enough to amortize
# per-call overhead on object stores, small enough to bound memory per file.
READ_CHUNK_BYTES = 1 << 20
# Per-DoFn-instance cap on dead-letter log lines; counters carry the totals.
MAX_LOGGED_DEAD_LETTERS = 20


class DocumentBlock(list):
  """Records read at once, in order: what a reader with `document_blocks` emits in place of the
  records of a block of lines (~256 KB) that its compiled scanner read. A consumer that keys
  every document (the Beam job's runs) does it in one call per block: per document, a Beam
  step and a DoFn call cost more than the keying itself. Iterate it for the records."""


class NoFilesMatchedError(ValueError):
  """A file pattern given to a reader matches no files (or cannot be matched)."""


def counter(name: str):
  return beam.metrics.Metrics.counter(SOURCES_NAMESPACE, name)


class CounterTally:
  """Counts kept as plain ints and added to their Beam counters at `flush`: one Beam counter
  inc costs about a microsecond (it looks up the current metrics container), and a reader made
  four per document, a noticeable share of a ~2 KB C4 document's cost.

  Args:
    namespace: the counters' namespace.
    names: the counters' names.
  """

  def __init__(self, namespace: str, names):
    self._counters = {name: beam.metrics.Metrics.counter(namespace, name) for name in names}
    self.counts = dict.fromkeys(self._counters, 0)

  def flush(self) -> None:
    """Adds what was counted since the last flush to the Beam counters."""
    for name, count in self.counts.items():
      if count:
        self._counters[name].inc(count)
        self.counts[name] = 0


def make_dead_letter(path: str, line: int, reason: str, detail: str,
                     raw: bytes) -> dict:
  """Returns a dead-letter record (see the module docstring for the fields)."""
  return {"path": path, "line": line, "reason": reason, "detail": detail,
          "raw": bytes(raw)}


def synthetic_url(path: str, line: int | None = None) -> str:
  """Returns a deterministic URL for a document at `path` (and 1-based `line`).

  Local paths are made absolute and given the file:// scheme; paths with a
  scheme (gs://, s3://, file://) are kept as they are.
  """
  if "://" not in path:
    path = "file://" + os.path.abspath(path)
  return path if line is None else f"{path}#L{line}"


def check_pattern_matches(file_pattern: str) -> None:
  """Raises NoFilesMatchedError unless `file_pattern` matches at least one file.

  Runs `FileSystems.match` where it is called (pipeline construction), so a
  wrong path fails before any job is submitted.
  """
  if not file_pattern:
    raise NoFilesMatchedError("file pattern is empty")
  try:
    result = FileSystems.match([file_pattern])[0]
  except (BeamIOError, ValueError) as e:
    raise NoFilesMatchedError(
        f"cannot match file pattern {file_pattern!r}: {e}") from e
  if not result.metadata_list:
    raise NoFilesMatchedError(f"no files match pattern {file_pattern!r}")


class Rejected(Exception):
  """A unit of input that cannot become a record; carries a reason code."""

  def __init__(self, reason: str, detail: str):
    super().__init__(f"{reason}: {detail}")
    self.reason = reason
    self.detail = detail


def decode_utf8(raw: bytes) -> str:
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise Rejected(REASON_INVALID_UTF8, str(e)) from e


def checked_string(obj: dict, field: str, required: bool) -> str | None:
  """Returns obj[field] if it is a UTF-8-encodable str; None if absent and optional."""
  if field not in obj:
    if required:
      raise Rejected(REASON_MISSING.format(field=field),
                      f"JSON object has no {field!r} field")
    return None
  value = obj[field]
  if not isinstance(value, str):
    raise Rejected(REASON_NOT_STRING.format(field=field),
                    f"field {field!r} is a {type(value).__name__}, not a string")
  try:
    if not value.isascii():  # O(1) in CPython; an ASCII str always encodes
      value.encode("utf-8")
  except UnicodeEncodeError as e:
    # A JSON escape of a lone surrogate ("\ud800") decodes to a str that no
    # later stage could encode; reject it here, where its line is known.
    raise Rejected(REASON_NOT_ENCODABLE.format(field=field), str(e)) from e
  return value


# Arrays and objects nested deeper than this are refused: json parses them recursively, and
# beyond about 1,000 levels less the caller's own stack depth (which differs between runners) it
# raised RecursionError, which failed the whole job; a fixed bound makes it one dead letter,
# the same on every runner.
MAX_JSON_NESTING = 500


def nesting_exceeds(raw: bytes, limit: int) -> bool:
  """Whether the JSON text `raw` nests arrays and objects more than `limit` deep (brackets inside
  strings do not count)."""
  depth, in_string, escaped = 0, False, False
  for byte in raw:
    if in_string:
      if escaped:
        escaped = False
      elif byte == 0x5C:  # backslash
        escaped = True
      elif byte == 0x22:  # quote
        in_string = False
    elif byte == 0x22:
      in_string = True
    elif byte == 0x5B or byte == 0x7B:  # [ {
      depth += 1
      if depth > limit:
        return True
    elif byte == 0x5D or byte == 0x7D:  # ] }
      depth -= 1
  return False


def parse_json_object(raw: bytes) -> dict:
  text = decode_utf8(raw)
  # Only a line with more brackets than the bound can nest deeper (two scans in C per line).
  if (raw.count(b"[") + raw.count(b"{") > MAX_JSON_NESTING
      and nesting_exceeds(raw, MAX_JSON_NESTING)):
    raise Rejected(REASON_INVALID_JSON, f"arrays and objects nested more than "
                   f"{MAX_JSON_NESTING} deep")
  try:
    obj = json.loads(text)
  except json.JSONDecodeError as e:
    raise Rejected(REASON_INVALID_JSON, str(e)) from e
  if not isinstance(obj, dict):
    raise Rejected(REASON_NOT_OBJECT,
                    f"top-level JSON value is a {type(obj).__name__}")
  return obj


def split_outputs(outputs, with_dead_letters: bool):
  records = outputs[RECORDS_TAG]
  return (records, outputs[DEAD_LETTER_TAG]) if with_dead_letters else records
