"""The generic file reader: match a glob, read each file as lines or whole, parse each unit with a
format's parser (`parse(path, line, raw) -> record` or raise Rejected), dead-letter the rest.

Each format (c4_json, jsonl, text) only supplies its parser, as datatrove's readers do."""
from __future__ import annotations

import dataclasses
import logging
from typing import Callable

import apache_beam as beam
import numpy as np
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes

from beam_pipeline.sources.common import check_pattern_matches
from beam_pipeline.sources.common import CounterTally
from beam_pipeline.sources.common import DEAD_LETTER_TAG
from beam_pipeline.sources.common import DocumentBlock
from beam_pipeline.sources.common import make_dead_letter
from beam_pipeline.sources.common import MAX_LOGGED_DEAD_LETTERS
from beam_pipeline.sources.common import NoFilesMatchedError
from beam_pipeline.sources.common import REASON_CORRUPT
from beam_pipeline.sources.common import RECORDS_TAG
from beam_pipeline.sources.common import Rejected
from beam_pipeline.sources.common import SOURCES_NAMESPACE
from beam_pipeline.sources.common import split_outputs
from beam_pipeline.sources.streams import CorruptStreamError
from beam_pipeline.sources.streams import iter_decompressed
from beam_pipeline.sources.streams import LineSplitter
from beam_pipeline.sources.streams import open_raw


@dataclasses.dataclass(frozen=True)
class ScannedFields:
  """A JSON-lines format's fast path (json_lines.LineScanner): the string fields a record is
  made of, the document's text first, and `record(path, line, values)` building it from their
  values (str, or None where the object lacks the key; the text as its UTF-8 bytes where the
  reader gives text so), or returning None to leave the line to the parser (e.g. a required
  field is missing, so that the parser's dead letter says which)."""
  names: tuple[str, ...]
  record: Callable[[str, int, list], dict | None]

  def usable(self) -> bool:
    """Whether the scanner can look these keys up: distinct, printable ASCII, no quote or
    backslash (it compares a key's raw bytes, and leaves escaped keys to json)."""
    return (len(set(self.names)) == len(self.names)
            and all(n.isascii() and n.isprintable() and '"' not in n and "\\" not in n
                    for n in self.names))


class ReadFileFn(beam.DoFn):
  """Reads ReadableFiles into records (main output) and dead letters.

  In line mode each line is a unit; otherwise the whole file is one unit,
  numbered line 1. `parse(path, line, raw)` returns a record or raises
  Rejected. With `scanned`, lines are read a block at a time by the compiled scanner
  (json_lines), which hands every line outside its subset of JSON, and every line `scanned`
  declines, to `parse`: records, dead letters and counters are the same either way.
  With `utf8_text`, every record's "text" is its UTF-8 bytes instead of str (the Beam job hashes
  and spills bytes: the scanner's text is never decoded, and the parser's is encoded). With
  `document_blocks`, the records the scanner reads come as DocumentBlocks, each holding the
  consecutive records of a block's lines up to the next line it left to `parse` (whose record
  or dead letter follows the block): the records in the same order, the same dead letters and
  counts.
  """

  def __init__(self, parse: Callable[[str, int, bytes], dict], per_line: bool,
               scanned: ScannedFields | None = None, utf8_text: bool = False,
               document_blocks: bool = False):
    self._parse = parse
    self._per_line = per_line
    self._utf8_text = utf8_text
    self._document_blocks = document_blocks
    self._scanned = scanned if scanned is not None and scanned.usable() else None
    self._malformed_name = "malformed_lines" if per_line else "malformed_files"
    # Counted per file, added to the counters when the file is done (CounterTally).
    self._tally = CounterTally(SOURCES_NAMESPACE, (
        "files_read", "lines_read", "empty_lines", "documents_read", self._malformed_name,
        "corrupt_files", "dead_letters", "bytes_read", "bytes_emitted", "bytes_dead_lettered"))
    self._logged = 0

  def _dead_letter(self, path, line, reason, detail, raw):
    counts = self._tally.counts
    counts["dead_letters"] += 1
    counts["bytes_dead_lettered"] += len(raw)
    if self._logged < MAX_LOGGED_DEAD_LETTERS:
      self._logged += 1
      logging.warning("dead letter %s:%d %s: %s", path, line, reason, detail)
    return beam.pvalue.TaggedOutput(
        DEAD_LETTER_TAG, make_dead_letter(path, line, reason, detail, raw))

  def _unit(self, path: str, line: int, raw: bytes):
    """Turns one unit into a record or a dead letter; returns what to emit."""
    counts = self._tally.counts
    counts["bytes_read"] += len(raw)
    try:
      record = self._parse(path, line, raw)
    except Rejected as e:
      counts[self._malformed_name] += 1
      return self._dead_letter(path, line, e.reason, e.detail, raw)
    counts["documents_read"] += 1
    counts["bytes_emitted"] += len(raw)
    if self._utf8_text:
      # A parser's text always encodes: a lone surrogate is a dead letter (not_encodable).
      record["text"] = record["text"].encode("utf-8")
    return record

  def process(self, readable_file: fileio.ReadableFile):
    path = readable_file.metadata.path
    compression = CompressionTypes.detect_compression_type(path)
    self._tally.counts["files_read"] += 1
    try:
      with open_raw(readable_file) as raw_stream:
        chunks = iter_decompressed(raw_stream, compression)
        if self._per_line and self._scanned is not None:
          yield from self._process_scanned_lines(path, chunks)
        elif self._per_line:
          yield from self._process_lines(path, chunks)
        else:
          yield from self._process_whole(path, chunks)
    finally:
      self._tally.flush()

  def _process_lines(self, path, chunks):
    splitter = LineSplitter()
    counts = self._tally.counts
    try:
      for line, raw in splitter.iter_lines(chunks):
        counts["lines_read"] += 1
        if not raw:
          counts["empty_lines"] += 1
          continue
        yield self._unit(path, line, raw)
    except CorruptStreamError as e:
      yield self._lost_tail(path, splitter, e)

  def _lost_tail(self, path, splitter: LineSplitter, error: CorruptStreamError):
    """The dead letter of a stream that failed: the line it was in, from there to the end."""
    counts = self._tally.counts
    counts["corrupt_files"] += 1
    tail = splitter.pending_bytes()
    counts["bytes_read"] += len(tail)
    return self._dead_letter(
        path, splitter.line_no + 1, REASON_CORRUPT,
        f"{error}; lines from here to the end of the file are lost", tail)

  def _process_scanned_lines(self, path, chunks):
    """_process_lines, a block of lines at a time through the compiled scanner."""
    from beam_pipeline.sources import json_lines  # numba: imported by the readers that use it
    splitter = LineSplitter()
    counts = self._tally.counts
    scanner = json_lines.LineScanner(tuple(n.encode("ascii") for n in self._scanned.names))
    make_record = self._scanned.record
    per_line = len(self._scanned.names)  # strings per line in `strings`
    try:
      for block in splitter.iter_blocks(chunks):
        lines, fields, out = scanner.scan(block)
        first_line = splitter.line_no + 1
        splitter.line_no += len(lines)  # before any yield: an error report names the next line
        counts["lines_read"] += len(lines)
        # Empty lines counted at once, a block's strings decoded in one comprehension, and flat
        # lists of ints: a list per line (tolist of the arrays) cost more than the parse, most
        # of it in the garbage collector.
        rows = np.flatnonzero(lines[:, 2] != json_lines.LINE_EMPTY)
        counts["empty_lines"] += len(lines) - len(rows)
        kept = lines[rows]
        strings = self._scanned_strings(memoryview(out), fields[rows])
        documents = document_bytes = 0
        records = DocumentBlock() if self._document_blocks else None
        try:
          for k, (row, start, end, status) in enumerate(zip(
              rows.tolist(), kept[:, 0].tolist(), kept[:, 1].tolist(), kept[:, 2].tolist())):
            if status == json_lines.LINE_FIELDS:
              record = make_record(path, first_line + row, strings[per_line * k:per_line * (k + 1)])
              if record is not None:
                documents += 1
                document_bytes += end - start
                if records is None:
                  yield record
                else:
                  records.append(record)
                continue
            if records:  # the records before this line first: the order stays the lines'
              yield records
              records = DocumentBlock()
            yield self._unit(path, first_line + row, bytes(block[start:end]))
          if records:
            yield records
        finally:  # counted per block (and when a consumer stops or fails midway)
          counts["documents_read"] += documents
          counts["bytes_read"] += document_bytes
          counts["bytes_emitted"] += document_bytes
    except CorruptStreamError as e:
      yield self._lost_tail(path, splitter, e)

  def _scanned_strings(self, out: memoryview, spans: np.ndarray) -> list:
    """The strings of a block's kept lines, line after line (spans[line, field]: the (start,
    end) of the field's value in `out`, start -1 where absent): str, but the text (each line's
    first) as UTF-8 bytes with utf8_text (the scanner vouched for the UTF-8: no decode)."""
    flat = spans.reshape(-1, 2)
    starts, ends = flat[:, 0].tolist(), flat[:, 1].tolist()
    if not self._utf8_text:
      return [str(out[a:b], "utf-8") if a >= 0 else None for a, b in zip(starts, ends)]
    per_line = spans.shape[1]
    strings = [None] * len(starts)
    for field in range(per_line):
      column = zip(starts[field::per_line], ends[field::per_line])
      strings[field::per_line] = (
          [bytes(out[a:b]) if a >= 0 else None for a, b in column] if field == 0 else
          [str(out[a:b], "utf-8") if a >= 0 else None for a, b in column])
    return strings

  def _process_whole(self, path, chunks):
    parts = []
    counts = self._tally.counts
    try:
      for chunk in chunks:
        parts.append(chunk)
    except CorruptStreamError as e:
      # A truncated document is not the document: reject all of it.
      counts["corrupt_files"] += 1
      raw = b"".join(parts)
      counts["bytes_read"] += len(raw)
      yield self._dead_letter(path, 1, REASON_CORRUPT, str(e), raw)
      return
    raw = b"".join(parts)
    if not raw:
      counts["empty_lines"] += 1  # An empty file is one zero-byte unit.
      return
    yield self._unit(path, 1, raw)


class ReadFiles(beam.PTransform):
  """Base of the file readers: match a glob, read each file with a ReadFileFn."""

  def __init__(self, file_pattern: str, *, with_dead_letters: bool = False,
               validate: bool = True, label: str | None = None, utf8_text: bool = False,
               document_blocks: bool = False):
    super().__init__(label)
    self._utf8_text = utf8_text
    self._document_blocks = document_blocks
    if not isinstance(file_pattern, str) or not file_pattern:
      raise NoFilesMatchedError(
          f"{type(self).__name__} needs a non-empty file pattern, got "
          f"{file_pattern!r}")
    self._file_pattern = file_pattern
    self._with_dead_letters = with_dead_letters
    self._validate = validate

  def _make_fn(self) -> ReadFileFn:
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
    return split_outputs(outputs, self._with_dead_letters)
