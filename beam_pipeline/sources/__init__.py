"""Document readers as Beam PTransforms: every source yields C4-shaped records.

One module per format (c4_json, jsonl, text, tfds, default_corpus) over shared decompression
and line splitting (streams) and one generic file reader (files); this package re-exports them.

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

JSON lines whose object holds only strings (C4's all do) are read a block at a
time by a compiled scanner (json_lines); json stays the parser of record: any
line outside the scanner's subset goes to it, and both give the same records,
dead letters and counters (tests/test_json_lines.py, tests/test_sources.py).

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

from beam_pipeline.sources.c4_json import ReadC4Json
from beam_pipeline.sources.common import C4_FIELDS  # noqa: F401
from beam_pipeline.sources.common import check_pattern_matches  # noqa: F401
from beam_pipeline.sources.common import DEAD_LETTER_TAG  # noqa: F401
from beam_pipeline.sources.common import DocumentBlock  # noqa: F401
from beam_pipeline.sources.common import INVALID_UTF8_POLICIES  # noqa: F401
from beam_pipeline.sources.common import make_dead_letter  # noqa: F401
from beam_pipeline.sources.common import NoFilesMatchedError  # noqa: F401
from beam_pipeline.sources.common import REASON_CORRUPT  # noqa: F401
from beam_pipeline.sources.common import REASON_INVALID_JSON  # noqa: F401
from beam_pipeline.sources.common import REASON_INVALID_UTF8  # noqa: F401
from beam_pipeline.sources.common import REASON_MISSING  # noqa: F401
from beam_pipeline.sources.common import REASON_NOT_ENCODABLE  # noqa: F401
from beam_pipeline.sources.common import REASON_NOT_OBJECT  # noqa: F401
from beam_pipeline.sources.common import REASON_NOT_STRING  # noqa: F401
from beam_pipeline.sources.common import REASONS  # noqa: F401
from beam_pipeline.sources.common import RECORDS_TAG  # noqa: F401
from beam_pipeline.sources.common import SOURCES  # noqa: F401
from beam_pipeline.sources.common import SOURCES_NAMESPACE  # noqa: F401
from beam_pipeline.sources.common import synthetic_url  # noqa: F401
from beam_pipeline.sources.default_corpus import ReadDefaultCorpus
from beam_pipeline.sources.jsonl import ReadJsonl
from beam_pipeline.sources.text import ReadTextFiles
from beam_pipeline.sources.tfds import ReadTfdsC4


def read_documents(pipeline, source: str, pattern: str | None = None, *,
                   tfds_split: str = "train", tfds_config: str = "en",
                   tfds_version: str = "3.1.0", text_field: str = "text",
                   lines: bool = False, invalid_utf8: str = "dead_letter",
                   with_dead_letters: bool = False, label: str | None = None,
                   utf8_text: bool = False, document_blocks: bool = False):
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
    utf8_text: the file sources (c4_json, jsonl, text) give each record's text as its UTF-8
      bytes, not str (what the Beam job hashes and spills: a decode and an encode fewer per
      document); tfds and default give str whatever this says.
    document_blocks: the JSON-lines sources (c4_json, jsonl) give the records their compiled
      scanner reads as DocumentBlocks (lists of consecutive records, one per ~256 KB of lines:
      one Beam element, not hundreds); the other sources give records one by one whatever this
      says. Records, dead letters and counters are the same either way.
    label: transform label; default "Read_<source>".

  Returns:
    The records PCollection, or (records, dead_letters).
  """
  common = {"with_dead_letters": with_dead_letters}
  files = {**common, "utf8_text": utf8_text}
  scanned = {**files, "document_blocks": document_blocks}
  if source == "default":
    if pattern:
      raise ValueError(f"source 'default' takes no pattern, got {pattern!r}")
    transform = ReadDefaultCorpus(**common)
  elif source in ("c4_json", "jsonl", "text", "tfds") and not pattern:
    raise ValueError(f"source {source!r} needs a pattern"
                     + (" (the TFDS data_dir)" if source == "tfds" else ""))
  elif source == "c4_json":
    transform = ReadC4Json(pattern, **scanned)
  elif source == "jsonl":
    transform = ReadJsonl(pattern, text_field, **scanned)
  elif source == "text":
    transform = ReadTextFiles(pattern, lines=lines, invalid_utf8=invalid_utf8,
                              **files)
  elif source == "tfds":
    transform = ReadTfdsC4(pattern, tfds_split, tfds_config, tfds_version,
                           **common)
  else:
    raise ValueError(f"unknown source {source!r}; expected one of {SOURCES}")
  return pipeline | (label or f"Read_{source}") >> transform
