"""Where the SeqIO tasks find a pipeline run, and what they read from its manifest.

The data directory (one mechanism, resolved lazily, every time data or artifacts are read):

  1. `set_data_dir(path)` called from Python, or the gin binding
     `seqio_tasks.set_data_dir.data_dir = 'gs://bucket/run'` (a binding needs no call: it is read
     when the data is read, after T5X has parsed its gin files);
  2. else the environment variable NCC_DATA_DIR;
  3. else './output' (the Beam job's default --output_dir).

A directory holds a *complete* run only once its manifest.json exists (output_layout). Anything
missing raises `MissingDataError`, whose message names the directory and the exact command that
makes the data: `python -m beam_pipeline --output_dir=DIR --methods=METHOD`.

This module reads what the Beam job writes but never imports it (the two share only the core
package `neural_compression`); any filesystem tf.io.gfile knows (local, gs://) works.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import posixpath
import threading

import gin
import tensorflow as tf

from neural_compression import output_layout as layout

DATA_DIR_ENV = "NCC_DATA_DIR"
DEFAULT_DATA_DIR = "./output"
M1_CHECKPOINT_ENV = "NCC_M1_CHECKPOINT"
# The shipped M1 checkpoint, as the Beam job's default --m1_checkpoint.
DEFAULT_M1_CHECKPOINT = str(pathlib.Path(__file__).resolve().parent.parent / "m1_checkpoint")
ARTIFACTS_SUBDIR = "artifacts"  # <output_dir>/artifacts, the job's default --artifact_cache_dir

_lock = threading.Lock()
_data_dir_override: str | None = None


class MissingDataError(FileNotFoundError):
  """A run, a method's records or an artifact is missing; the message says how to make it."""


def pipeline_command(data_dir: str, method: str) -> str:
  """The command that writes `method`'s records into `data_dir`."""
  return f"python -m beam_pipeline --output_dir={data_dir} --methods={method}"


@gin.configurable(module="seqio_tasks")
def set_data_dir(data_dir: str | None = None) -> str | None:
  """Points every task and vocabulary at a pipeline run's output directory.

  Call it from Python (`seqio_tasks.set_data_dir('/data/run1')`; None clears the override), or
  bind it in gin (`seqio_tasks.set_data_dir.data_dir = '/data/run1'`), which `get_data_dir` reads
  lazily. A Python call wins over a gin binding, which wins over $NCC_DATA_DIR.

  Returns:
    The previous Python override (None if there was none).
  """
  global _data_dir_override
  with _lock:
    previous, _data_dir_override = _data_dir_override, data_dir
  return previous


def _gin_data_dir() -> str | None:
  try:
    value = gin.query_parameter("seqio_tasks.set_data_dir.data_dir")
  except ValueError:  # not bound
    return None
  # A binding to a macro (data_dir = %DATA_DIR) or @fn() comes back unevaluated.
  if isinstance(value, gin.config.ConfigurableReference) and value.evaluate:
    value = value.scoped_configurable_fn()
  return value if isinstance(value, str) and value else None


def get_data_dir() -> str:
  """The data directory now in force (see the module docstring for the order)."""
  return (_data_dir_override or _gin_data_dir() or os.environ.get(DATA_DIR_ENV)
          or DEFAULT_DATA_DIR)


def read_manifest(data_dir: str, method: str | None = None) -> dict:
  """Returns the run's manifest; raises MissingDataError if the run is absent or incomplete.

  Args:
    data_dir: the pipeline's --output_dir.
    method: the method string the caller needs, named in the error's command (default: the
      job's default method list is not assumed; the message says to pick --methods).
  """
  path = posixpath.join(data_dir, layout.MANIFEST)
  if not tf.io.gfile.exists(path):
    hint = pipeline_command(data_dir, method or "<methods>")
    raise MissingDataError(
        f"no complete pipeline run in {data_dir!r}: {path} does not exist (a run writes it "
        f"last). Make the data with:\n  {hint}\nor point the tasks elsewhere with "
        f"${DATA_DIR_ENV} or seqio_tasks.set_data_dir(...)")
  with tf.io.gfile.GFile(path, "rb") as f:
    return json.loads(f.read())


def check_method_split(data_dir: str, method: str, slug: str, split: str) -> dict:
  """Returns the manifest if it lists records of `method` for `split`; else MissingDataError."""
  manifest = read_manifest(data_dir, method)
  command = pipeline_command(data_dir, method)
  if method not in manifest.get("methods", []):
    raise MissingDataError(
        f"the run in {data_dir!r} has no {method!r} records (its methods: "
        f"{', '.join(manifest.get('methods', [])) or 'none'}). Make them with:\n  {command}\n"
        "(into another --output_dir if this run should stay, then point $"
        f"{DATA_DIR_ENV} or seqio_tasks.set_data_dir(...) there)")
  if not manifest.get("records", {}).get(f"{slug}/{split}"):
    raise MissingDataError(
        f"the run in {data_dir!r} has no {split!r} records for {method!r} (too few documents "
        f"for that split?). Rerun with more input or another --validation_percent:\n  {command}")
  return manifest


def list_record_files(data_dir: str, method: str, slug: str, split: str) -> list[str]:
  """The record files of one method and split, sorted; MissingDataError if there are none."""
  manifest = check_method_split(data_dir, method, slug, split)
  pattern = layout.file_pattern(data_dir, slug, split)
  files = sorted(tf.io.gfile.glob(pattern))
  # The manifest lists every shard the run wrote; anything else means the directory changed.
  listed = sorted(f["path"] for f in manifest.get("files", [])
                  if f.get("method") == slug and f.get("split") == split)
  found = sorted(posixpath.relpath(f, data_dir) if "://" not in f else f for f in files)
  if not files or (listed and listed != found):
    raise MissingDataError(
        f"the manifest in {data_dir!r} lists {len(listed)} {method!r} {split!r} shard(s) but "
        f"{len(files)} file(s) match {pattern}: the directory was changed after the run. "
        f"Rewrite it with:\n  {pipeline_command(data_dir, method)} --overwrite")
  return files


def read_stats(data_dir: str) -> dict:
  """The run's stats.json: {slug: {split: figures}} (bytes, tokens, ratios, M2 examples)."""
  read_manifest(data_dir)  # stats of an incomplete run would be partial
  with tf.io.gfile.GFile(posixpath.join(data_dir, layout.STATS), "rb") as f:
    return json.loads(f.read())


def _sha256_file(path: str) -> str:
  h = hashlib.sha256()
  with tf.io.gfile.GFile(path, "rb") as f:
    while chunk := f.read(1 << 20):
      h.update(chunk)
  return h.hexdigest()


def read_artifact(data_dir: str, method: str, manifest_key: str, flag: str,
                  name_glob: str) -> bytes:
  """Returns the bytes of the artifact the run recorded by sha256 under `manifest_key`.

  Looks at the run's --<flag> file (if the job was given one) and at <data_dir>/artifacts/
  <name_glob> (where the job caches what it estimates), and accepts only a file whose sha256 is
  the manifest's: a different unigram model or SentencePiece model would decode to garbage.
  """
  manifest = read_manifest(data_dir, method)
  want = manifest.get(manifest_key)
  if not want:
    raise MissingDataError(
        f"the run in {data_dir!r} records no {manifest_key} (it did not run {method!r}). Make "
        f"it with:\n  {pipeline_command(data_dir, method)}")
  candidates = []
  given = manifest.get("flags", {}).get(flag)
  if given:
    candidates.append(given)
  artifacts_dir = posixpath.join(data_dir, ARTIFACTS_SUBDIR)
  candidates += sorted(tf.io.gfile.glob(posixpath.join(artifacts_dir, name_glob)))
  for path in candidates:
    if tf.io.gfile.exists(path) and _sha256_file(path) == want:
      with tf.io.gfile.GFile(path, "rb") as f:
        return f.read()
  raise MissingDataError(
      f"no artifact with sha256 {want} (the manifest's {manifest_key}) in "
      f"{artifacts_dir}/{name_glob}{' or ' + given if given else ''}: the run cached it "
      "elsewhere (--artifact_cache_dir); copy that file into "
      f"{artifacts_dir}/ or rerun:\n  {pipeline_command(data_dir, method)}")


def directory_checksum(path: str) -> str:
  """sha256 over (name, sha256(content)) of the files directly in a directory, sorted by name.

  The same definition as the manifest's m1_checksum, so a vocabulary can refuse an M1 checkpoint
  other than the one that compressed the run.
  """
  h = hashlib.sha256()
  for name in sorted(tf.io.gfile.listdir(path)):
    full = posixpath.join(path, name.rstrip("/"))
    if tf.io.gfile.isdir(full):
      continue
    h.update(posixpath.basename(full).encode() + b"\0")
    h.update(bytes.fromhex(_sha256_file(full)))
  return h.hexdigest()


def default_m1_checkpoint() -> str:
  """$NCC_M1_CHECKPOINT, else the shipped m1_checkpoint/ (the Beam job's default)."""
  return os.environ.get(M1_CHECKPOINT_ENV) or DEFAULT_M1_CHECKPOINT
