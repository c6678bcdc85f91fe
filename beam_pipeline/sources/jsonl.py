"""JSON-lines corpora: one document per line, the text in a named field."""
from __future__ import annotations

from beam_pipeline.sources.common import checked_string
from beam_pipeline.sources.common import parse_json_object
from beam_pipeline.sources.common import synthetic_url
from beam_pipeline.sources.files import ReadFileFn
from beam_pipeline.sources.files import ReadFiles
from beam_pipeline.sources.files import ScannedFields


class _JsonlLineParser:
  """A JSON-lines line: `text_field` required; url, timestamp optional strings."""

  def __init__(self, text_field: str, url_field: str, timestamp_field: str):
    self._text_field = text_field
    self._url_field = url_field
    self._timestamp_field = timestamp_field

  def __call__(self, path: str, line: int, raw: bytes) -> dict:
    obj = parse_json_object(raw)
    text = checked_string(obj, self._text_field, required=True)
    url = checked_string(obj, self._url_field, required=False)
    timestamp = checked_string(obj, self._timestamp_field, required=False)
    return self._record(path, line, text, url, timestamp)

  @property
  def fields(self) -> tuple[str, str, str]:
    return self._text_field, self._url_field, self._timestamp_field

  def from_fields(self, path: str, line: int, values: list) -> dict | None:
    """The record of a line the compiled scanner read (values: `fields`' strings, None where
    absent); None without a text, so that __call__ says why."""
    text, url, timestamp = values
    return None if text is None else self._record(path, line, text, url, timestamp)

  @staticmethod
  def _record(path, line, text, url, timestamp) -> dict:
    return {"text": text,
            "url": url if url is not None else synthetic_url(path, line),
            "timestamp": timestamp if timestamp is not None else ""}


class ReadJsonl(ReadFiles):
  """Reads JSON-lines files: one document per line, text in `text_field`.

  The record's url is the line's `url_field` string if present, else a
  synthetic `file://<path>#L<line>`; timestamp is `timestamp_field` or "".
  Other fields are dropped, so records stay C4-shaped. With `utf8_text` the text is given as
  its UTF-8 bytes, not str; with `document_blocks` the records the compiled scanner reads come
  as DocumentBlocks (as ReadC4Json's).
  """

  def __init__(self, file_pattern: str, text_field: str = "text", *,
               url_field: str = "url", timestamp_field: str = "timestamp",
               with_dead_letters: bool = False, validate: bool = True,
               label: str | None = None, utf8_text: bool = False,
               document_blocks: bool = False):
    super().__init__(file_pattern, with_dead_letters=with_dead_letters,
                     validate=validate, label=label, utf8_text=utf8_text,
                     document_blocks=document_blocks)
    self._parser = _JsonlLineParser(text_field, url_field, timestamp_field)

  def _make_fn(self):
    return ReadFileFn(self._parser, per_line=True,
                      scanned=ScannedFields(self._parser.fields, self._parser.from_fields),
                      utf8_text=self._utf8_text, document_blocks=self._document_blocks)
