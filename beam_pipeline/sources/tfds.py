"""TFDS c4/<config>:<version> from a data_dir (TFDS and TensorFlow are imported only here)."""
from __future__ import annotations

from typing import Any

import apache_beam as beam

from beam_pipeline.sources.common import C4_FIELDS
from beam_pipeline.sources.common import counter
from beam_pipeline.sources.common import DEAD_LETTER_TAG
from beam_pipeline.sources.common import make_dead_letter
from beam_pipeline.sources.common import NoFilesMatchedError
from beam_pipeline.sources.common import REASON_INVALID_UTF8
from beam_pipeline.sources.common import RECORDS_TAG
from beam_pipeline.sources.common import split_outputs


class _DecodeTfdsExampleFn(beam.DoFn):
  """Turns a TFDS C4 example (tensors or numpy of bytes) into a C4 record."""

  def __init__(self, source_name: str):
    self._source_name = source_name
    self._documents_read = counter("documents_read")
    self._malformed = counter("malformed_lines")
    self._dead_letters = counter("dead_letters")
    self._bytes_read = counter("bytes_read")
    self._bytes_emitted = counter("bytes_emitted")
    self._bytes_dead_lettered = counter("bytes_dead_lettered")

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
    return split_outputs(outputs, self._with_dead_letters)
