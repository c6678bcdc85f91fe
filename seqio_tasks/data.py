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

Readers verify what they read (neural_compression.run_manifest): when a split's shards are
listed, the files must be exactly the manifest's, each of its recorded size (one stat per
file); with `verify_checksums(True)` (or $NCC_VERIFY_CHECKSUMS=1) each file's sha256 and record
count are checked too, reading it once. A mismatch raises `DamagedDataError` naming the files.
`verify_run(data_dir)` checks a whole run that way.

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
from neural_compression import run_manifest

DATA_DIR_ENV = "NCC_DATA_DIR"
DEFAULT_DATA_DIR = "./output"
M1_CHECKPOINT_ENV = "NCC_M1_CHECKPOINT"
# The shipped M1 checkpoint, as the Beam job's default --m1_checkpoint.
DEFAULT_M1_CHECKPOINT = str(pathlib.Path(__file__).resolve().parent.parent / "m1_checkpoint")
ARTIFACTS_SUBDIR = run_manifest.ARTIFACTS_SUBDIR  # the job's default --artifact_cache_dir

VERIFY_CHECKSUMS_ENV = "NCC_VERIFY_CHECKSUMS"

_lock = threading.Lock()
_data_dir_override: str | None = None
_verify_override: bool | None = None


class MissingDataError(FileNotFoundError):
  """A run, a method's records or an artifact is missing; the message says how to make it."""


class DamagedDataError(ValueError):
  """A run's files differ from what its manifest records; the message names every bad file."""


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


def manifest_fingerprint(data_dir: str) -> tuple | None:
  """(size, mtime) of the run's manifest, None if absent: cheap to ask, changes with the run."""
  try:
    stat = tf.io.gfile.stat(posixpath.join(data_dir, layout.MANIFEST))
  except tf.errors.NotFoundError:
    return None
  return (stat.length, stat.mtime_nsec)


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
    data_ = f.read()
  try:
    return run_manifest.relative_to(run_manifest.parse_manifest(data_, path), data_dir)
  except run_manifest.ManifestError as e:
    raise DamagedDataError(f"{e}; rewrite the run with:\n  "
                           f"{pipeline_command(data_dir, method or '<methods>')} --overwrite"
                           ) from None


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


@gin.configurable(module="seqio_tasks")
def verify_checksums(enabled: bool = False) -> bool | None:
  """Turns on the on-demand check: every shard's sha256 and record count before it is read.

  Off by default (it reads every byte once more). Call `seqio_tasks.verify_checksums(True)`,
  bind `seqio_tasks.verify_checksums.enabled = True` in gin, or set $NCC_VERIFY_CHECKSUMS=1.
  Returns the previous Python setting.
  """
  global _verify_override
  with _lock:
    previous, _verify_override = _verify_override, enabled
  return previous


def _checksums_enabled() -> bool:
  if _verify_override is not None:
    return _verify_override
  try:
    if gin.query_parameter("seqio_tasks.verify_checksums.enabled"):
      return True
  except ValueError:  # not bound
    pass
  return os.environ.get(VERIFY_CHECKSUMS_ENV, "") not in ("", "0")


def _size_of(path: str) -> int | None:
  try:
    return tf.io.gfile.stat(path).length
  except tf.errors.NotFoundError:
    return None


def _damaged_run_error(data_dir: str, method: str, problems: list[str]) -> "DamagedDataError":
  shown = "\n  ".join(problems[:10]) + (f"\n  ... and {len(problems) - 10} more"
                                          if len(problems) > 10 else "")
  return DamagedDataError(
      f"the run in {data_dir!r} does not match its manifest:\n  {shown}\nThe files changed after "
      f"the run wrote them; rewrite it with:\n  {pipeline_command(data_dir, method)} --overwrite")


def list_record_files(data_dir: str, method: str, slug: str, split: str,
                      checksums: bool | None = None) -> list[str]:
  """The record files of one method and split, sorted, checked against the run's manifest.

  At open (always): the shard files are exactly those the manifest lists, each of the size it
  records. On demand (`checksums`, default: `verify_checksums`' setting): also each file's
  sha256 and record count. Raises DamagedDataError naming every bad file, MissingDataError if
  the run or its records are absent.
  """
  manifest = check_method_split(data_dir, method, slug, split)
  files = sorted(tf.io.gfile.glob(layout.file_pattern(data_dir, slug, split)))
  infos = run_manifest.shard_infos(manifest, slug, split)
  problems = run_manifest.check_shard_set(data_dir, manifest, slug, split, files)
  if checksums is None:
    checksums = _checksums_enabled()
  problems += run_manifest.check_files(data_dir, infos, _size_of,
                                       _open_binary if checksums else None)
  if problems:
    raise _damaged_run_error(data_dir, method, sorted(set(problems)))
  return [posixpath.join(data_dir, i["path"]) for i in infos]


def _open_binary(path: str):
  return tf.io.gfile.GFile(path, "rb")


def verify_run(data_dir: str | None = None) -> list[str]:
  """Checks every file of a run against its manifest, reading every byte (sha256, record
  counts); returns the problems (empty: the run is intact). MissingDataError if there is none."""
  data_dir = data_dir or get_data_dir()
  manifest = read_manifest(data_dir)
  infos = run_manifest.shard_infos(manifest) + run_manifest.run_file_infos(manifest)
  return run_manifest.check_files(data_dir, infos, _size_of, _open_binary)


def read_stats(data_dir: str) -> dict:
  """The run's stats.json: {slug: {split: figures}} (bytes, tokens, ratios, M2 examples),
  checked against the sha256 its manifest records."""
  manifest = read_manifest(data_dir)  # stats of an incomplete run would be partial
  infos = [i for i in run_manifest.run_file_infos(manifest) if i["path"] == layout.STATS]
  problems = run_manifest.check_files(data_dir, infos, _size_of, _open_binary)
  if problems:
    raise _damaged_run_error(data_dir, "<methods>", problems)
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
  # Where the run says it found or cached the artifact (another --artifact_cache_dir, say).
  for info in manifest.get("artifacts", {}).values():
    if info.get("sha256") == want and info.get("file"):
      path = info["file"]  # relative paths are relative to the run's directory
      candidates.append(path if "://" in path or os.path.isabs(path)
                        else posixpath.join(data_dir, path))
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
