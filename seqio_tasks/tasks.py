"""SeqIO Tasks and Mixtures over the Beam job's records: one Task per method and variant.

Task names: `c4_<slug>` where slug = methods.parse_method(method).slug, e.g.

  c4_equal_info_ac_b16_v65k   EqualInfoAC[b=16, v=65k] (M2 on M1-compressed text, the paper's best)
  c4_ac_v256, c4_static_ac_v256, c4_gzip_v256, c4_bytes, c4_spm_v32k, ...

Registered at import: every entry of methods.PAPER_METHODS, the static-unigram EqualInfoAC
variants (static_equal_info_ac:b{16,32,64,128}:v{256,65k}) and the paper-rule variants
(`...:paper`) of both windowed kinds; `register_method_task(method)` adds any other method.
Splits: 'train' and 'validation'; the files are output_layout.file_pattern(data_dir, slug, split)
read with seqio.TFExampleDataSource, the data directory being resolved when the data is read
(seqio_tasks.data: set_data_dir / $NCC_DATA_DIR / './output').

Features of every example (after the task's preprocessor):
  targets    int32 [tokens]: model ids = raw token + 3 (vocabularies: PAD 0, EOS 1, UNK 2)
  raw_bytes  int64 []: the source bytes (EOS symbols included) the tokens cover
  example_id tf.string [], chunk int64 []: the record's provenance
Only `targets` is an output feature; the others ride along for the bits/byte metric (seqio's
feature converters drop them). No EOS id is appended: the paper's streams have none.

Mixtures (their tasks have different vocabularies, so they list tasks, e.g. for evaluation
sweeps and data checks, and seqio refuses to *read* them as one dataset):
  c4_paper_methods    every method of the paper's tables
  c4_paper_baselines  Bytes, SentencePiece, AC, StaticAC, GZip (v256 and v65k)
  c4_all_methods      every task registered at import
"""
from __future__ import annotations

import collections.abc
from typing import Mapping

import seqio
import tensorflow as tf

from neural_compression import methods
from neural_compression import output_layout as layout
from seqio_tasks import data
from seqio_tasks import metrics
from seqio_tasks import vocabularies

SPLITS = ("train", "validation")
TASK_PREFIX = "c4_"

FEATURE_DESCRIPTION = {
    layout.TARGETS: tf.io.VarLenFeature(tf.int64),
    layout.RAW_BYTES: tf.io.FixedLenFeature([], tf.int64),
    layout.EXAMPLE_ID: tf.io.FixedLenFeature([], tf.string),
    layout.CHUNK: tf.io.FixedLenFeature([], tf.int64),
}

WINDOW_BITS = (16, 32, 64, 128)
TOKEN_VOCABS = ("v256", "v65k")
EXTRA_METHODS = (
    [f"static_equal_info_ac:b{b}:{v}" for b in WINDOW_BITS for v in TOKEN_VOCABS]
    + [f"{k}:b{b}:{v}:paper" for k in methods.WINDOWED_KINDS for b in WINDOW_BITS
       for v in TOKEN_VOCABS])
BASELINE_METHODS = ("bytes", "spm:v32k", "ac:v256", "ac:v65k", "static_ac:v256",
                    "static_ac:v65k", "gzip:v256", "gzip:v65k")


def task_name(method: str) -> str:
  """'equal_info_ac:b16:v65k' -> 'c4_equal_info_ac_b16_v65k'."""
  return TASK_PREFIX + methods.parse_method(method).slug


class _LazyFilePatterns(collections.abc.Mapping):
  """split -> file pattern, resolved against the data directory in force when it is read."""

  def __init__(self, slug: str):
    self._slug = slug

  def __getitem__(self, split: str) -> str:
    if split not in SPLITS:
      raise KeyError(split)
    return layout.file_pattern(data.get_data_dir(), self._slug, split)

  def __iter__(self):
    return iter(SPLITS)

  def __len__(self):
    return len(SPLITS)

  def __repr__(self):
    return f"{{split: file_pattern($NCC_DATA_DIR or set_data_dir(), {self._slug!r}, split)}}"


class PipelineDataSource(seqio.TFExampleDataSource):
  """TFExampleDataSource over one method's records of the run in the data directory.

  The directory is resolved each time shards are listed, and the run is checked first: a
  missing manifest, method or split raises data.MissingDataError naming the directory and the
  pipeline command that makes the data.
  """

  def __init__(self, method: str):
    self.spec = methods.parse_method(method)
    super().__init__(split_to_filepattern=_LazyFilePatterns(self.spec.slug),
                     feature_description=FEATURE_DESCRIPTION)

  def list_shards(self, split: str) -> list[str]:
    if split not in SPLITS:
      raise ValueError(f"split {split!r}: the pipeline writes {SPLITS}")
    return data.list_record_files(data.get_data_dir(), self.spec.name, self.spec.slug, split)

  def num_input_examples(self, split: str) -> int | None:
    """Records of `split` per the manifest (None if the run is not there yet)."""
    try:
      manifest = data.read_manifest(data.get_data_dir(), self.spec.name)
    except data.MissingDataError:
      return None
    return manifest.get("records", {}).get(f"{self.spec.slug}/{split}")


def to_model_features(dataset: tf.data.Dataset,
                      sequence_length: Mapping[str, int] | None = None) -> tf.data.Dataset:
  """Parsed records -> task features: raw tokens + ID_OFFSET as int32 targets (module doc).

  Refuses (InvalidArgumentError when read) a record longer than sequence_length['targets']:
  seqio would trim it, and the trimmed tokens would no longer cover the record's raw_bytes,
  silently corrupting bits/byte. Write the data with --m2_length <= that length instead.
  """
  max_length = (sequence_length or {}).get("targets")

  def convert(example):
    targets = example[layout.TARGETS]
    if isinstance(targets, tf.sparse.SparseTensor):
      targets = tf.sparse.to_dense(targets)
    targets = tf.cast(targets, tf.int32) + vocabularies.ID_OFFSET
    if max_length:
      tf.debugging.assert_less_equal(
          tf.size(targets), max_length,
          message=(f"a record is longer than the task feature length {max_length} "
                   "(TASK_FEATURE_LENGTHS['targets']); trimming it would break its raw_bytes "
                   "and bits/byte. Rerun the pipeline with --m2_length<="
                   f"{max_length} or raise the length"))
    return {
        "targets": targets,
        layout.RAW_BYTES: example[layout.RAW_BYTES],
        layout.EXAMPLE_ID: example[layout.EXAMPLE_ID],
        layout.CHUNK: example[layout.CHUNK],
    }

  return dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE)


def register_method_task(method: str) -> seqio.Task:
  """Registers (once) and returns the Task `c4_<slug>` of any method string."""
  name = task_name(method)
  if name in seqio.TaskRegistry.names():
    return seqio.TaskRegistry.get(name)
  spec = methods.parse_method(method)
  vocab = vocabularies.vocabulary_for(spec.name)
  return seqio.TaskRegistry.add(
      name,
      source=PipelineDataSource(spec.name),
      preprocessors=[to_model_features],
      output_features={"targets": seqio.Feature(vocabulary=vocab, add_eos=False,
                                                dtype=tf.int32, rank=1)},
      postprocess_fn=metrics.targets_to_raw_bytes,
      metric_fns=[metrics.bits_per_byte],
  )


def _register_mixture(name: str, task_names: list[str]) -> None:
  if name not in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.add(name, task_names, default_rate=1.0)


ALL_METHODS = tuple(dict.fromkeys(list(methods.PAPER_METHODS) + EXTRA_METHODS))
TASK_NAMES = tuple(register_method_task(m).name for m in ALL_METHODS)

_register_mixture("c4_paper_methods", [task_name(m) for m in methods.PAPER_METHODS])
_register_mixture("c4_paper_baselines", [task_name(m) for m in BASELINE_METHODS])
_register_mixture("c4_all_methods", list(TASK_NAMES))
MIXTURE_NAMES = ("c4_paper_methods", "c4_paper_baselines", "c4_all_methods")
