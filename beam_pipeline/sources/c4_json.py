"""C4 JSON shards: one {text, url, timestamp} object per line, all three required strings."""
from __future__ import annotations

from beam_pipeline.sources.common import C4_FIELDS
from beam_pipeline.sources.common import checked_string
from beam_pipeline.sources.common import parse_json_object
from beam_pipeline.sources.files import ReadFileFn
from beam_pipeline.sources.files import ReadFiles
from beam_pipeline.sources.files import ScannedFields


def _parse_c4_line(path: str, line: int, raw: bytes) -> dict:
  """A C4 JSON line: text, url and timestamp are all required strings."""
  del path, line  # C4 records carry their own URL.
  obj = parse_json_object(raw)
  return {field: checked_string(obj, field, required=True)
          for field in C4_FIELDS}


def _c4_record_from_fields(path: str, line: int, values: list) -> dict | None:
  """The record of a line the compiled scanner read (values: C4_FIELDS' strings, None where
  absent); None if a field is missing, so that _parse_c4_line says which."""
  del path, line
  text, url, timestamp = values
  if text is None or url is None or timestamp is None:
    return None
  return {"text": text, "url": url, "timestamp": timestamp}



class ReadC4Json(ReadFiles):
  """Reads C4 JSON shards: one JSON object {text, url, timestamp} per line.

  Example: `p | ReadC4Json("gs://bucket/c4/en/c4-train.*-of-01024.json.gz")`.

  Args:
    file_pattern: glob over any Beam filesystem; compression by extension.
    with_dead_letters: if True the transform returns (records, dead_letters).
    validate: check at construction time that the pattern matches files.
    label: optional transform label.
    utf8_text: give each record's text as its UTF-8 bytes, not str.
    document_blocks: give the records the compiled scanner reads as DocumentBlocks (lists of
      consecutive records), not one by one.

  Lines missing any of the three fields, or with a non-string one, are
  dead-lettered: a C4 record without its URL could not be split.
  """

  def _make_fn(self):
    return ReadFileFn(_parse_c4_line, per_line=True,
                      scanned=ScannedFields(C4_FIELDS, _c4_record_from_fields),
                      utf8_text=self._utf8_text, document_blocks=self._document_blocks)
