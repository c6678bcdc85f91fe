"""Document readers as Beam PTransforms: every source yields C4-shaped records.

Each reader is a `PTransform` from `PBegin` to a `PCollection[dict]` of records
`{"text": str, "url": str, "timestamp": str}`, the shape of C4 (and of
`neural_compression.corpus.default_corpus_documents`), so every later stage and
the URL-hash train/validation split (`neural_compression.corpus.split_of_url`)
treat all corpora alike:

  ReadDefaultCorpus()                       the embedded default corpus (249 docs)
  ReadC4Json(file_pattern)                  C4 JSON shards (c4-train.*.json.gz)
  ReadTfdsC4(data_dir, split)               TFDS c4/en:3.1.0 from a data_dir
  ReadJsonl(file_pattern, text_field=...)   other JSON-lines corpora
  ReadTextFiles(file_pattern, lines=False)  plain text, one doc per file or line
  read_documents(pipeline, source, pattern) picks one of the above by flag value

Common usage stays one line: `docs = p | ReadC4Json("gs://b/c4-train.*.json.gz")`.

Files. Patterns are globs over any filesystem Beam supports (local, gs://,
s3://, ...): files are matched with `fileio.MatchFiles` and opened through
`FileSystems`. Compression follows the file extension, as in Beam
(`.gz`, `.bz2`, `.deflate`, `.zst`/`.zstd`, `.xz`/`.lzma`; anything else is
uncompressed), but we decompress the raw byte stream ourselves because Beam's
`CompressedFile` accepts a truncated gzip stream silently; here a stream that
ends before its end-of-stream marker, or fails to decompress, is an error we
count and report (below). Concatenated (multi-member) streams are read whole;
bytes after the last member that do not start another member (e.g. zero
padding) are reported as corruption after all lines have been emitted.

No silent drops, no crashes on bad data. Every unit of input ends up in exactly
one of: an emitted record, a dead-letter record, or the `empty_lines` counter
(zero-byte lines, which carry no data). Dead letters go to a tagged output,
`DEAD_LETTER_TAG == "dead_letter"`; pass `with_dead_letters=True` to get
`(records, dead_letters)` instead of just the records. A dead-letter record is

  {"path": str,     the file's path as matched (TFDS: "tfds://<name>/<split>")
   "line": int,     1-based line number (whole-file units: 1; TFDS: 0, unknown)
   "reason": str,   a stable code, see REASONS
   "detail": str,   a human-readable explanation
   "raw": bytes}    the exact bytes rejected (line terminator excluded)

A corrupt or truncated compressed file does not fail the job: the lines read
before the damage are kept, and the rest of the file becomes one dead letter
with reason "corrupt_compressed_stream", `line` = the number of the first line
not read in full, and `raw` = the decompressed bytes of that partial line
(possibly empty; what follows the damage cannot be recovered). I/O errors of
the filesystem itself are not caught, so the runner retries them as usual.

Lines. A line ends at b"\\n"; a b"\\r" just before it is part of the
terminator too. Terminators are not part of a line's bytes. A last line without
a terminator is still a line. Zero-byte lines are skipped and counted in
`empty_lines`.

Byte accounting (Beam counters, namespace "sources", in bytes of decompressed
input, terminators excluded): `bytes_read == bytes_emitted +
bytes_dead_lettered` holds exactly for every file-based reader, so a later
check can prove every byte read was either used or dead-lettered. For a JSON
line the bytes are the whole line's, not just its text's. ReadDefaultCorpus and
ReadTfdsC4 count the UTF-8 bytes of each record's `text`.

UTF-8 decisions. JSON must be UTF-8 (RFC 8259), so a JSON line that is not
valid UTF-8 is dead-lettered ("invalid_utf8"), and so is a string field that
holds a lone surrogate escape such as "\\ud800" ("<field>_not_utf8_encodable"),
because it could not be encoded to UTF-8 later. For plain text,
`ReadTextFiles(invalid_utf8="dead_letter")` (the default) dead-letters a
document that is not valid UTF-8 with its exact bytes: lossless, and every
emitted `text` round-trips, `text.encode("utf-8") == raw bytes`. We rejected
`errors="surrogateescape"` (its str is not encodable as UTF-8 downstream) and
an extra `text_bytes` field (it would break the C4 shape every later stage
relies on). `invalid_utf8="replace"` instead decodes with U+FFFD replacement:
lossy, counted in `invalid_utf8_replaced`; the raw bytes still count as
emitted.

Synthetic URLs. Records without a URL (plain text; JSONL without a url field)
get `file://<absolute path>#L<line>` (per-line documents) or
`file://<absolute path>` (whole files); a path that already has a scheme
(gs://...) is used as is. The URL, and so the split, is a pure function of
where the file is, so move files and their split changes. Such records get
`timestamp == ""`.

Counters (namespace SOURCES_NAMESPACE == "sources"): files_read, lines_read,
empty_lines, documents_read, malformed_lines, malformed_files, corrupt_files,
dead_letters, invalid_utf8_replaced, bytes_read, bytes_emitted,
bytes_dead_lettered. Counts are of events; with retries on a real runner use
committed metrics.
"""
from __future__ import annotations

import bz2
import json
import logging
import lzma
import os
import zlib
from typing import Any, Callable, Iterable, Iterator

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from neural_compression import corpus

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
_READ_CHUNK_BYTES = 1 << 20
# Per-DoFn-instance cap on dead-letter log lines; counters carry the totals.
_MAX_LOGGED_DEAD_LETTERS = 20


class NoFilesMatchedError(ValueError):
  """A file pattern given to a reader matches no files (or cannot be matched)."""


def _counter(name: str):
  return beam.metrics.Metrics.counter(SOURCES_NAMESPACE, name)


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


# ----------------------------------------------------------------------------
# Byte streams: decompression with truncation detection, and line splitting.


class _CorruptStreamError(Exception):
  """The compressed stream of a file is damaged or truncated."""


def _new_decompressor(compression_type: str):
  """Returns a fresh streaming decompressor, with `decompress`, `eof`, `unused_data`."""
  if compression_type == CompressionTypes.GZIP:
    return zlib.decompressobj(zlib.MAX_WBITS | 16)  # gzip header and trailer.
  if compression_type == CompressionTypes.DEFLATE:
    return zlib.decompressobj()  # zlib-wrapped deflate, as Beam writes it.
  if compression_type == CompressionTypes.BZIP2:
    return bz2.BZ2Decompressor()
  if compression_type == CompressionTypes.LZMA:
    return lzma.LZMADecompressor()
  if compression_type == CompressionTypes.ZSTD:
    import zstandard  # pylint: disable=g-import-not-at-top  # Optional, as in Beam.
    # Same window cap as Beam's CompressedFile, for the same memory reason.
    return zstandard.ZstdDecompressor(
        max_window_size=2147483648).decompressobj()
  raise ValueError(f"unsupported compression type {compression_type!r}")


def _iter_decompressed(raw, compression_type: str) -> Iterator[bytes]:
  """Yields the decompressed content of the raw stream `raw`, chunk by chunk.

  Raises:
    _CorruptStreamError: the stream fails to decompress, or ends before the
      end-of-stream marker of its last member. Everything decompressed before
      that has been yielded.
  """
  if compression_type == CompressionTypes.UNCOMPRESSED:
    while chunk := raw.read(_READ_CHUNK_BYTES):
      yield chunk
    return
  decompressor = _new_decompressor(compression_type)
  consumed_any = False
  while True:
    if decompressor.eof:
      # A member ended; what follows, if anything, is another member.
      buf = decompressor.unused_data or raw.read(_READ_CHUNK_BYTES)
      if not buf:
        return
      decompressor = _new_decompressor(compression_type)
    else:
      buf = raw.read(_READ_CHUNK_BYTES)
      if not buf:
        if not consumed_any:
          # Python's gzip reads a zero-byte file as empty, but no compressor writes one (an
          # empty gzip stream is 20 bytes): it is a file truncated to nothing.
          raise _CorruptStreamError(
              f"zero-byte {compression_type} file: not a valid compressed stream "
              "(truncated to nothing)")
        raise _CorruptStreamError(
            "compressed stream ended before its end-of-stream marker "
            "(truncated file)")
    consumed_any = True
    try:
      out = decompressor.decompress(buf)
    except MemoryError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      # zlib.error, OSError (bz2), LZMAError, ZstdError, EOFError: all mean
      # the bytes are not a valid stream. Filesystem I/O errors are raised by
      # raw.read above, outside this try, so they still reach the runner.
      raise _CorruptStreamError(f"{type(e).__name__}: {e}") from e
    if out:
      yield out


class _LineSplitter:
  """Splits byte chunks into lines; remembers where it is for error reports.

  Attributes:
    line_no: 1-based number of the last line yielded (0 before the first).
  """

  def __init__(self):
    self.line_no = 0
    self._pending: list[bytes] = []

  def pending_bytes(self) -> bytes:
    """Bytes of the current, not yet terminated, line."""
    return b"".join(self._pending)

  def _finish(self, line: bytes) -> tuple[int, bytes]:
    self.line_no += 1
    if line.endswith(b"\r"):
      line = line[:-1]
    return self.line_no, line

  def iter_lines(self, chunks: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """Yields (1-based line number, line bytes without terminator)."""
    for chunk in chunks:
      if b"\n" not in chunk:
        # Keep partial lines as a list, so a long line costs O(n), not O(n^2).
        self._pending.append(chunk)
        continue
      parts = chunk.split(b"\n")
      self._pending.append(parts[0])
      first = b"".join(self._pending)
      self._pending = [parts[-1]] if parts[-1] else []
      yield self._finish(first)
      for part in parts[1:-1]:
        yield self._finish(part)
    if self._pending:
      last = b"".join(self._pending)
      self._pending = []
      yield self._finish(last)


def _open_raw(readable_file: fileio.ReadableFile):
  # UNCOMPRESSED: we want the raw bytes and decompress them ourselves.
  return readable_file.open(mime_type="application/octet-stream",
                            compression_type=CompressionTypes.UNCOMPRESSED)


# ----------------------------------------------------------------------------
# Parsing one unit (a line or a whole file) into a record or a rejection.


class _Rejected(Exception):
  """A unit of input that cannot become a record; carries a reason code."""

  def __init__(self, reason: str, detail: str):
    super().__init__(f"{reason}: {detail}")
    self.reason = reason
    self.detail = detail


def _decode_utf8(raw: bytes) -> str:
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise _Rejected(REASON_INVALID_UTF8, str(e)) from e


def _checked_string(obj: dict, field: str, required: bool) -> str | None:
  """Returns obj[field] if it is a UTF-8-encodable str; None if absent and optional."""
  if field not in obj:
    if required:
      raise _Rejected(REASON_MISSING.format(field=field),
                      f"JSON object has no {field!r} field")
    return None
  value = obj[field]
  if not isinstance(value, str):
    raise _Rejected(REASON_NOT_STRING.format(field=field),
                    f"field {field!r} is a {type(value).__name__}, not a string")
  try:
    value.encode("utf-8")
  except UnicodeEncodeError as e:
    # A JSON escape of a lone surrogate ("\ud800") decodes to a str that no
    # later stage could encode; reject it here, where its line is known.
    raise _Rejected(REASON_NOT_ENCODABLE.format(field=field), str(e)) from e
  return value


def _parse_json_object(raw: bytes) -> dict:
  text = _decode_utf8(raw)
  try:
    obj = json.loads(text)
  except json.JSONDecodeError as e:
    raise _Rejected(REASON_INVALID_JSON, str(e)) from e
  if not isinstance(obj, dict):
    raise _Rejected(REASON_NOT_OBJECT,
                    f"top-level JSON value is a {type(obj).__name__}")
  return obj


def _parse_c4_line(path: str, line: int, raw: bytes) -> dict:
  """A C4 JSON line: text, url and timestamp are all required strings."""
  del path, line  # C4 records carry their own URL.
  obj = _parse_json_object(raw)
  return {field: _checked_string(obj, field, required=True)
          for field in C4_FIELDS}


class _JsonlLineParser:
  """A JSON-lines line: `text_field` required; url, timestamp optional strings."""

  def __init__(self, text_field: str, url_field: str, timestamp_field: str):
    self._text_field = text_field
    self._url_field = url_field
    self._timestamp_field = timestamp_field

  def __call__(self, path: str, line: int, raw: bytes) -> dict:
    obj = _parse_json_object(raw)
    text = _checked_string(obj, self._text_field, required=True)
    url = _checked_string(obj, self._url_field, required=False)
    timestamp = _checked_string(obj, self._timestamp_field, required=False)
    return {"text": text,
            "url": url if url is not None else synthetic_url(path, line),
            "timestamp": timestamp if timestamp is not None else ""}


class _TextParser:
  """Plain text: the unit's bytes are the document, under an invalid-UTF-8 policy."""

  def __init__(self, invalid_utf8: str, per_line: bool):
    self._invalid_utf8 = invalid_utf8
    self._per_line = per_line
    self._replaced = _counter("invalid_utf8_replaced")

  def __call__(self, path: str, line: int, raw: bytes) -> dict:
    try:
      text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
      if self._invalid_utf8 != "replace":
        raise _Rejected(REASON_INVALID_UTF8, str(e)) from e
      text = raw.decode("utf-8", errors="replace")
      self._replaced.inc()
    return {"text": text,
            "url": synthetic_url(path, line if self._per_line else None),
            "timestamp": ""}


# ----------------------------------------------------------------------------
# DoFns.


class _ReadFileFn(beam.DoFn):
  """Reads ReadableFiles into records (main output) and dead letters.

  In line mode each line is a unit; otherwise the whole file is one unit,
  numbered line 1. `parse(path, line, raw)` returns a record or raises
  _Rejected.
  """

  def __init__(self, parse: Callable[[str, int, bytes], dict], per_line: bool):
    self._parse = parse
    self._per_line = per_line
    self._files_read = _counter("files_read")
    self._lines_read = _counter("lines_read")
    self._empty_lines = _counter("empty_lines")
    self._documents_read = _counter("documents_read")
    self._malformed = _counter(
        "malformed_lines" if per_line else "malformed_files")
    self._corrupt_files = _counter("corrupt_files")
    self._dead_letters = _counter("dead_letters")
    self._bytes_read = _counter("bytes_read")
    self._bytes_emitted = _counter("bytes_emitted")
    self._bytes_dead_lettered = _counter("bytes_dead_lettered")
    self._logged = 0

  def _dead_letter(self, path, line, reason, detail, raw):
    self._dead_letters.inc()
    self._bytes_dead_lettered.inc(len(raw))
    if self._logged < _MAX_LOGGED_DEAD_LETTERS:
      self._logged += 1
      logging.warning("dead letter %s:%d %s: %s", path, line, reason, detail)
    return beam.pvalue.TaggedOutput(
        DEAD_LETTER_TAG, make_dead_letter(path, line, reason, detail, raw))

  def _unit(self, path: str, line: int, raw: bytes):
    """Turns one unit into a record or a dead letter; yields what to emit."""
    self._bytes_read.inc(len(raw))
    try:
      record = self._parse(path, line, raw)
    except _Rejected as e:
      self._malformed.inc()
      yield self._dead_letter(path, line, e.reason, e.detail, raw)
      return
    self._documents_read.inc()
    self._bytes_emitted.inc(len(raw))
    yield record

  def process(self, readable_file: fileio.ReadableFile):
    path = readable_file.metadata.path
    compression = CompressionTypes.detect_compression_type(path)
    self._files_read.inc()
    with _open_raw(readable_file) as raw_stream:
      chunks = _iter_decompressed(raw_stream, compression)
      if self._per_line:
        yield from self._process_lines(path, chunks)
      else:
        yield from self._process_whole(path, chunks)

  def _process_lines(self, path, chunks):
    splitter = _LineSplitter()
    try:
      for line, raw in splitter.iter_lines(chunks):
        self._lines_read.inc()
        if not raw:
          self._empty_lines.inc()
          continue
        yield from self._unit(path, line, raw)
    except _CorruptStreamError as e:
      self._corrupt_files.inc()
      tail = splitter.pending_bytes()
      self._bytes_read.inc(len(tail))
      yield self._dead_letter(
          path, splitter.line_no + 1, REASON_CORRUPT,
          f"{e}; lines from here to the end of the file are lost", tail)

  def _process_whole(self, path, chunks):
    parts = []
    try:
      for chunk in chunks:
        parts.append(chunk)
    except _CorruptStreamError as e:
      # A truncated document is not the document: reject all of it.
      self._corrupt_files.inc()
      raw = b"".join(parts)
      self._bytes_read.inc(len(raw))
      yield self._dead_letter(path, 1, REASON_CORRUPT, str(e), raw)
      return
    raw = b"".join(parts)
    if not raw:
      self._empty_lines.inc()  # An empty file is one zero-byte unit.
      return
    yield from self._unit(path, 1, raw)


class _CountRecordsFn(beam.DoFn):
  """Counts already-decoded records (documents_read, bytes of UTF-8 text)."""

  def __init__(self):
    self._documents_read = _counter("documents_read")
    self._bytes_read = _counter("bytes_read")
    self._bytes_emitted = _counter("bytes_emitted")

  def process(self, record: dict):
    n = len(record["text"].encode("utf-8"))
    self._documents_read.inc()
    self._bytes_read.inc(n)
    self._bytes_emitted.inc(n)
    yield record


class _DecodeTfdsExampleFn(beam.DoFn):
  """Turns a TFDS C4 example (tensors or numpy of bytes) into a C4 record."""

  def __init__(self, source_name: str):
    self._source_name = source_name
    self._documents_read = _counter("documents_read")
    self._malformed = _counter("malformed_lines")
    self._dead_letters = _counter("dead_letters")
    self._bytes_read = _counter("bytes_read")
    self._bytes_emitted = _counter("bytes_emitted")
    self._bytes_dead_lettered = _counter("bytes_dead_lettered")

  @staticmethod
  def _as_bytes(value: Any) -> bytes:
    if hasattr(value, "numpy"):  # An eager tf.Tensor.
      value = value.numpy()
    if isinstance(value, str):
      return value.encode("utf-8")
    return bytes(value)

  def process(self, example: dict):
    raw = {field: self._as_bytes(example[field]) for field in C4_FIELDS}
    self._bytes_read.inc(len(raw["text"]))
    try:
      record = {field: raw[field].decode("utf-8") for field in C4_FIELDS}
    except UnicodeDecodeError as e:
      self._malformed.inc()
      self._dead_letters.inc()
      self._bytes_dead_lettered.inc(len(raw["text"]))
      yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, make_dead_letter(
          self._source_name, 0, REASON_INVALID_UTF8,
          f"{e} (url bytes: {raw['url']!r})", raw["text"]))
      return
    self._documents_read.inc()
    self._bytes_emitted.inc(len(raw["text"]))
    yield record


# ----------------------------------------------------------------------------
# PTransforms.


def _result(outputs, with_dead_letters: bool):
  records = outputs[RECORDS_TAG]
  return (records, outputs[DEAD_LETTER_TAG]) if with_dead_letters else records


class _ReadFiles(beam.PTransform):
  """Base of the file readers: match a glob, read each file with a _ReadFileFn."""

  def __init__(self, file_pattern: str, *, with_dead_letters: bool = False,
               validate: bool = True, label: str | None = None):
    super().__init__(label)
    if not isinstance(file_pattern, str) or not file_pattern:
      raise NoFilesMatchedError(
          f"{type(self).__name__} needs a non-empty file pattern, got "
          f"{file_pattern!r}")
    self._file_pattern = file_pattern
    self._with_dead_letters = with_dead_letters
    self._validate = validate

  def _make_fn(self) -> _ReadFileFn:
    raise NotImplementedError

  def expand(self, pbegin):
    if self._validate:
      check_pattern_matches(self._file_pattern)
    outputs = (
        pbegin
        # DISALLOW: even with validate=False, or if the files vanish before
        # the job runs, an empty match fails the job naming the pattern.
        | "MatchFiles" >> fileio.MatchFiles(
            self._file_pattern,
            empty_match_treatment=fileio.EmptyMatchTreatment.DISALLOW)
        # ReadMatches reshuffles, so shards spread over workers.
        | "ReadMatches" >> fileio.ReadMatches(
            compression=CompressionTypes.UNCOMPRESSED, skip_directories=True)
        | "ReadFiles" >> beam.ParDo(self._make_fn()).with_outputs(
            DEAD_LETTER_TAG, main=RECORDS_TAG))
    return _result(outputs, self._with_dead_letters)


class ReadC4Json(_ReadFiles):
  """Reads C4 JSON shards: one JSON object {text, url, timestamp} per line.

  Example: `p | ReadC4Json("gs://bucket/c4/en/c4-train.*-of-01024.json.gz")`.

  Args:
    file_pattern: glob over any Beam filesystem; compression by extension.
    with_dead_letters: if True the transform returns (records, dead_letters).
    validate: check at construction time that the pattern matches files.
    label: optional transform label.

  Lines missing any of the three fields, or with a non-string one, are
  dead-lettered: a C4 record without its URL could not be split.
  """

  def _make_fn(self):
    return _ReadFileFn(_parse_c4_line, per_line=True)


class ReadJsonl(_ReadFiles):
  """Reads JSON-lines files: one document per line, text in `text_field`.

  The record's url is the line's `url_field` string if present, else a
  synthetic `file://<path>#L<line>`; timestamp is `timestamp_field` or "".
  Other fields are dropped, so records stay C4-shaped.
  """

  def __init__(self, file_pattern: str, text_field: str = "text", *,
               url_field: str = "url", timestamp_field: str = "timestamp",
               with_dead_letters: bool = False, validate: bool = True,
               label: str | None = None):
    super().__init__(file_pattern, with_dead_letters=with_dead_letters,
                     validate=validate, label=label)
    self._parser = _JsonlLineParser(text_field, url_field, timestamp_field)

  def _make_fn(self):
    return _ReadFileFn(self._parser, per_line=True)


class ReadTextFiles(_ReadFiles):
  """Reads plain-text files: each file one document, or each line with `lines=True`.

  Args:
    file_pattern: glob over any Beam filesystem; compression by extension.
    lines: one document per non-empty line instead of one per file.
    invalid_utf8: "dead_letter" (default, lossless) or "replace" (lossy
      U+FFFD decoding); see the module docstring.
    with_dead_letters, validate, label: as for ReadC4Json.

  Whole-file documents keep their bytes exactly, line terminators included.
  """

  def __init__(self, file_pattern: str, *, lines: bool = False,
               invalid_utf8: str = "dead_letter",
               with_dead_letters: bool = False, validate: bool = True,
               label: str | None = None):
    super().__init__(file_pattern, with_dead_letters=with_dead_letters,
                     validate=validate, label=label)
    if invalid_utf8 not in INVALID_UTF8_POLICIES:
      raise ValueError(f"invalid_utf8 must be one of {INVALID_UTF8_POLICIES}, "
                       f"got {invalid_utf8!r}")
    self._lines = lines
    self._invalid_utf8 = invalid_utf8

  def _make_fn(self):
    return _ReadFileFn(_TextParser(self._invalid_utf8, per_line=self._lines),
                       per_line=self._lines)


class ReadDefaultCorpus(beam.PTransform):
  """The embedded default corpus (`corpus.default_corpus_documents`), 249 records.

  Only the document list (`corpus.default_corpus_index`, a few kB) is embedded in the
  pipeline with `beam.Create`; the workers read the texts from the installed corpus package
  (the worker image installs it). Embedding the ~12 MB of text instead cost ~10 s of
  pickling and bz2 at every job start. Dead letters, if asked for, are an empty
  PCollection: the corpus is validated upstream.
  """

  def __init__(self, split: str | None = None, *,
               with_dead_letters: bool = False, label: str | None = None):
    super().__init__(label)
    self._split = split
    self._with_dead_letters = with_dead_letters

  def expand(self, pbegin):
    index = corpus.default_corpus_index(split=self._split)
    records = (pbegin
               | "Create" >> beam.Create(index)
               | "Read" >> beam.Map(corpus.read_default_corpus_document)
               | "Count" >> beam.ParDo(_CountRecordsFn()))
    if not self._with_dead_letters:
      return records
    return records, pbegin | "NoDeadLetters" >> beam.Create([])


class ReadTfdsC4(beam.PTransform):
  """Reads TFDS `c4/<config>:<version>` from `data_dir` into C4 records.

  Uses `tfds.builder` and `tfds.beam.ReadFromTFDS` (one read per shard), then
  decodes the bytes fields text/url/timestamp as UTF-8; an example that is not
  valid UTF-8 is dead-lettered with path "tfds://c4/<config>:<version>/<split>"
  and line 0. Raises NoFilesMatchedError at construction if `data_dir` holds
  no prepared examples for `split`.
  """

  def __init__(self, data_dir: str, split: str, config: str = "en",
               version: str = "3.1.0", *, with_dead_letters: bool = False,
               label: str | None = None):
    super().__init__(label)
    self._data_dir = data_dir
    self._split = split
    self._name = f"c4/{config}:{version}"
    self._with_dead_letters = with_dead_letters

  def expand(self, pbegin):
    # Imported here: TFDS pulls in TensorFlow, which only this reader needs.
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    try:
      builder = tfds.builder(self._name, data_dir=self._data_dir)
      split_info = builder.info.splits[self._split]
      num_examples = split_info.num_examples
    except Exception as e:  # pylint: disable=broad-except
      raise NoFilesMatchedError(
          f"cannot read TFDS {self._name} split {self._split!r} from data_dir "
          f"{self._data_dir!r}: {type(e).__name__}: {e}") from e
    if not num_examples:
      raise NoFilesMatchedError(
          f"TFDS {self._name} split {self._split!r} in data_dir "
          f"{self._data_dir!r} has no examples; was the dataset prepared?")
    source_name = f"tfds://{self._name}/{self._split}"
    outputs = (
        pbegin
        | "ReadFromTFDS" >> tfds.beam.ReadFromTFDS(builder, split=self._split)
        | "Decode" >> beam.ParDo(_DecodeTfdsExampleFn(source_name)).with_outputs(
            DEAD_LETTER_TAG, main=RECORDS_TAG))
    return _result(outputs, self._with_dead_letters)


def read_documents(pipeline, source: str, pattern: str | None = None, *,
                   tfds_split: str = "train", tfds_config: str = "en",
                   tfds_version: str = "3.1.0", text_field: str = "text",
                   lines: bool = False, invalid_utf8: str = "dead_letter",
                   with_dead_letters: bool = False, label: str | None = None):
  """Applies the reader named by `source` (a flag value in SOURCES) to `pipeline`.

  Args:
    pipeline: a beam.Pipeline (or PBegin).
    source: "default", "c4_json", "tfds", "jsonl" or "text".
    pattern: file glob for c4_json/jsonl/text; the TFDS data_dir for tfds;
      must be None or "" for default.
    tfds_split, tfds_config, tfds_version: for source "tfds".
    text_field: for source "jsonl".
    lines, invalid_utf8: for source "text".
    with_dead_letters: return (records, dead_letters) instead of records.
    label: transform label; default "Read_<source>".

  Returns:
    The records PCollection, or (records, dead_letters).
  """
  common = {"with_dead_letters": with_dead_letters}
  if source == "default":
    if pattern:
      raise ValueError(f"source 'default' takes no pattern, got {pattern!r}")
    transform = ReadDefaultCorpus(**common)
  elif source in ("c4_json", "jsonl", "text", "tfds") and not pattern:
    raise ValueError(f"source {source!r} needs a pattern"
                     + (" (the TFDS data_dir)" if source == "tfds" else ""))
  elif source == "c4_json":
    transform = ReadC4Json(pattern, **common)
  elif source == "jsonl":
    transform = ReadJsonl(pattern, text_field, **common)
  elif source == "text":
    transform = ReadTextFiles(pattern, lines=lines, invalid_utf8=invalid_utf8,
                              **common)
  elif source == "tfds":
    transform = ReadTfdsC4(pattern, tfds_split, tfds_config, tfds_version,
                           **common)
  else:
    raise ValueError(f"unknown source {source!r}; expected one of {SOURCES}")
  return pipeline | (label or f"Read_{source}") >> transform
