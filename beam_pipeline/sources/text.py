"""Plain text: one document per file, or per non-empty line, under an invalid-UTF-8 policy."""
from __future__ import annotations

from beam_pipeline.sources.common import counter
from beam_pipeline.sources.common import INVALID_UTF8_POLICIES
from beam_pipeline.sources.common import REASON_INVALID_UTF8
from beam_pipeline.sources.common import Rejected
from beam_pipeline.sources.common import synthetic_url
from beam_pipeline.sources.files import ReadFileFn
from beam_pipeline.sources.files import ReadFiles


class _TextParser:
  """Plain text: the unit's bytes are the document, under an invalid-UTF-8 policy."""

  def __init__(self, invalid_utf8: str, per_line: bool):
    self._invalid_utf8 = invalid_utf8
    self._per_line = per_line
    self._replaced = counter("invalid_utf8_replaced")

  def __call__(self, path: str, line: int, raw: bytes) -> dict:
    try:
      text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
      if self._invalid_utf8 != "replace":
        raise Rejected(REASON_INVALID_UTF8, str(e)) from e
      text = raw.decode("utf-8", errors="replace")
      self._replaced.inc()
    return {"text": text,
            "url": synthetic_url(path, line if self._per_line else None),
            "timestamp": ""}


class ReadTextFiles(ReadFiles):
  """Reads plain-text files: each file one document, or each line with `lines=True`.

  Args:
    file_pattern: glob over any Beam filesystem; compression by extension.
    lines: one document per non-empty line instead of one per file.
    invalid_utf8: "dead_letter" (default, lossless) or "replace" (lossy
      U+FFFD decoding); see the module docstring.
    with_dead_letters, validate, label, utf8_text: as for ReadC4Json.

  Whole-file documents keep their bytes exactly, line terminators included.
  """

  def __init__(self, file_pattern: str, *, lines: bool = False,
               invalid_utf8: str = "dead_letter",
               with_dead_letters: bool = False, validate: bool = True,
               label: str | None = None, utf8_text: bool = False):
    super().__init__(file_pattern, with_dead_letters=with_dead_letters,
                     validate=validate, label=label, utf8_text=utf8_text)
    if invalid_utf8 not in INVALID_UTF8_POLICIES:
      raise ValueError(f"invalid_utf8 must be one of {INVALID_UTF8_POLICIES}, "
                       f"got {invalid_utf8!r}")
    self._lines = lines
    self._invalid_utf8 = invalid_utf8

  def _make_fn(self):
    return ReadFileFn(_TextParser(self._invalid_utf8, per_line=self._lines),
                       per_line=self._lines, utf8_text=self._utf8_text)
