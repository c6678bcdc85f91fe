"""A run's manifest and the checks every reader makes against it (shared by the job and SeqIO).

The manifest (`<output_dir>/manifest.json`, written last, see output_layout) records every file
of a complete run by its path relative to the output directory, with its size in bytes, its
record count (shards) and its sha256. Readers use it two ways:

  at open (cheap: one stat per file)  the set of shard files is exactly the manifest's (none
                                      missing, none extra) and each file has the recorded size;
  on demand (reads every byte)        each file's sha256 and TFRecord framing (record count).

So a shard truncated at a record boundary, emptied, or replaced by another method's shard is
caught at open by its size, and any change of content (same size included) by the on-demand
check. Both name the file.

Files of the output directory that only the job itself uses while it runs:

  .lock                   the exclusive lock of a running job (beam_pipeline.output_dir)
  .staging-<run id>/      where a run is built, beside the previous complete run
  .staging-<run id>/IN_PROGRESS.json   marks that directory as ours
  .switch.json            the journal of a switch-over in progress (finished by the next job)

This module is filesystem-agnostic: callers pass `size_of(path)` and `open_binary(path)` for
their filesystem (tf.io.gfile in SeqIO, Beam's FileSystems in the job). No Beam, no TensorFlow.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import posixpath
import struct
import uuid
from typing import BinaryIO
from typing import Callable
from typing import Iterable

from neural_compression import output_layout as layout

FORMAT = "neural_compression.run_manifest"
VERSION = 2
DEAD_LETTERS = "dead_letters.jsonl"  # version 1 runs and the first version 2 runs: one file
DEAD_LETTERS_DIR = "dead_letters"  # now: sorted JSON lines in shards, dead_letter_part()
VERIFY_REPORT = "verify.json"
VERIFY_FORMAT = "neural_compression.verify_report"
LOCK = ".lock"
STAGING_PREFIX = ".staging-"
IN_PROGRESS = "IN_PROGRESS.json"
SWITCH_JOURNAL = ".switch.json"
ARTIFACTS_SUBDIR = "artifacts"  # the job's default --artifact_cache_dir, under output_dir
# Version 1 manifests did not list these files, which their runs wrote beside the shards.
_V1_RUN_FILES = (layout.STATS, DEAD_LETTERS)
_READ_CHUNK_BYTES = 1 << 20


class ManifestError(ValueError):
  """A manifest that is not a run manifest of ours (corrupt JSON, wrong format or version)."""


class RunFilesError(ValueError):
  """Files of a run differ from what its manifest records; the message names each file."""


def new_run_id() -> str:
  """A unique, sortable id for one run: UTC time and 8 random hex digits."""
  now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
  return f"{now}-{uuid.uuid4().hex[:8]}"


def parse_manifest(data: bytes, path: str) -> dict:
  """Parses manifest bytes; raises ManifestError naming `path` if they are not a run manifest."""
  try:
    manifest = json.loads(data)
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ManifestError(f"{path} is not valid JSON ({e})") from None
  if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
    raise ManifestError(f"{path} is not a run manifest (no \"format\": {FORMAT!r})")
  if manifest.get("version") not in (1, VERSION):
    raise ManifestError(f"{path} has manifest version {manifest.get('version')!r}; this code "
                        f"reads versions 1 and {VERSION}")
  files = manifest.get("files")
  if not isinstance(files, list) or not all(
      isinstance(f, dict) and isinstance(f.get("path"), str) for f in files):
    raise ManifestError(f"{path} has no valid \"files\" list")
  for key, kind in (("flags", dict), ("methods", list), ("records", dict)):
    if not isinstance(manifest.get(key), kind):
      raise ManifestError(f"{path} has no valid {key!r} ({kind.__name__} expected)")
  if not all(isinstance(m, str) for m in manifest["methods"]):
    raise ManifestError(f"{path} has a method that is not a string")
  for entry in files + list(manifest.get("run_files", [])):
    name = entry.get("path") if isinstance(entry, dict) else None
    # Version 1 recorded gs:// shards by absolute path; nothing else may leave the directory.
    remote_v1 = manifest["version"] == 1 and isinstance(name, str) and "://" in name
    if not remote_v1 and not is_inside(name):
      raise ManifestError(f"{path} lists {name!r}, which is not a path inside the run's "
                          "directory (a run records only its own files)")
  return manifest


# Runs written before manifests recorded `m1_context` were all compressed with a fixed
# 1,024-symbol attention window, whatever the checkpoint: their readers must decode with it.
M1_CONTEXT_BEFORE_RECORDING = 1024


def m1_context(manifest: dict) -> int | None:
  """The attention window (symbols) M1 had when it compressed the run; None if no method used M1."""
  if not manifest.get("m1_checksum"):
    return None
  return int(manifest.get("m1_context") or M1_CONTEXT_BEFORE_RECORDING)


def relative_to(manifest: dict, output_dir: str) -> dict:
  """The manifest with version 1's absolute shard paths (gs:// runs) made relative to
  `output_dir`, as version 2 records them; ManifestError for a path outside it."""
  if manifest.get("version") != 1:
    return manifest
  files = []
  for info in manifest["files"]:
    if "://" in info["path"]:
      try:
        info = {**info, "path": relative_path(output_dir, info["path"])}
      except ValueError:
        raise ManifestError(f"the manifest in {output_dir} lists {info['path']}, outside the "
                            "run's directory") from None
    files.append(info)
  return {**manifest, "files": files}


def is_inside(path) -> bool:
  """Whether `path` is a plain relative path that stays inside its directory."""
  return (isinstance(path, str) and bool(path) and not path.startswith("/") and "://" not in path
          and posixpath.normpath(path) == path and ".." not in path.split("/")
          and "\\" not in path)


def relative_path(output_dir: str, path: str) -> str:
  """`path` relative to `output_dir` (any filesystem: local paths or scheme://bucket/...)."""
  if "://" not in path and "://" not in output_dir:
    return posixpath.relpath(path, output_dir)
  prefix = output_dir.rstrip("/") + "/"
  if not path.startswith(prefix):
    raise ValueError(f"{path} is not under {output_dir}")
  return path[len(prefix):]


def shard_infos(manifest: dict, slug: str | None = None, split: str | None = None) -> list[dict]:
  """The manifest's shard entries (path, method, split, records, bytes, sha256), sorted by path."""
  out = []
  for info in manifest.get("files", []):
    if info.get("method") is None:
      continue  # a run file (stats, dead letters), not a shard
    if (slug is None or info["method"] == slug) and (split is None or info["split"] == split):
      out.append(info)
  return sorted(out, key=lambda i: i["path"])


def dead_letter_part(shard: int, num_shards: int) -> str:
  """The run-relative path of one dead-letter shard (JSON lines, sorted)."""
  return f"{DEAD_LETTERS_DIR}/part-{shard:05d}-of-{num_shards:05d}.jsonl"


def dead_letter_files(manifest: dict) -> list[str]:
  """Run-relative paths of the run's dead-letter files (none if nothing was dead-lettered)."""
  return [info["path"] for info in run_file_infos(manifest)
          if info["path"] == DEAD_LETTERS or info["path"].startswith(DEAD_LETTERS_DIR + "/")]


def run_file_infos(manifest: dict) -> list[dict]:
  """Entries of the run's other files (stats.json, dead letters): path, bytes, sha256."""
  if manifest.get("version") == 1:
    return [{"path": name} for name in _V1_RUN_FILES]
  return list(manifest.get("run_files", []))


def recorded_paths(manifest: dict) -> set[str]:
  """Every path (relative to the output directory) a run recorded as its own, manifest included.

  These and only these may be deleted when a newer run replaces this one.
  """
  paths = {layout.MANIFEST}
  paths.update(i["path"] for i in manifest.get("files", []) if "://" not in i["path"])
  paths.update(i["path"] for i in run_file_infos(manifest))
  return paths


def count_tfrecords(chunks: Iterable[bytes]) -> int:
  """Records in a TFRecord stream (framing only: 8-byte length, 4+4 CRC bytes around the data).

  Raises ValueError if the stream ends inside a record (a truncated file). Content is not
  checked here; a file's sha256 covers it. O(bytes): the data is skipped, not copied.
  """
  count, pending, pos = 0, bytearray(), 0  # pending[pos:] is what is not consumed yet
  skip = 0  # data + CRC bytes of the current record still to skip
  for chunk in chunks:
    if skip >= len(chunk):
      skip -= len(chunk)
      continue
    pending += memoryview(chunk)[skip:]
    skip = 0
    while len(pending) - pos >= 12:
      (length,) = struct.unpack_from("<Q", pending, pos)
      need = 12 + length + 4
      count += 1
      if len(pending) - pos >= need:
        pos += need
      else:
        skip = need - (len(pending) - pos)
        pos = len(pending)
        break
    del pending[:pos]
    pos = 0
  if skip or pending:
    raise ValueError("the file ends inside a record (truncated)")
  return count


def _chunks(stream: BinaryIO) -> Iterable[bytes]:
  while chunk := stream.read(_READ_CHUNK_BYTES):
    yield chunk


def digest_and_count(open_binary: Callable[[str], BinaryIO], path: str,
                     is_tfrecord: bool) -> tuple[str, int | None]:
  """(sha256 hex, TFRecord record count or None) of one file, read once in 1 MiB chunks."""
  h = hashlib.sha256()

  def hashed():
    with open_binary(path) as f:
      for chunk in _chunks(f):
        h.update(chunk)
        yield chunk

  if is_tfrecord:
    count = count_tfrecords(hashed())
  else:
    count = None
    for _ in hashed():
      pass
  return h.hexdigest(), count


def check_files(output_dir: str, infos: list[dict], size_of: Callable[[str], int | None],
                open_binary: Callable[[str], BinaryIO] | None = None) -> list[str]:
  """Checks files against their manifest entries; returns one problem line per bad file.

  Args:
    output_dir: the run's directory; entries' paths are relative to it.
    infos: manifest entries ("path", and "bytes", "sha256", "records" where recorded).
    size_of: the size in bytes of a path, None if it does not exist.
    open_binary: if given, also reads every file: sha256 and (shards) the record count.
  """
  problems = []
  for info in infos:
    path = info["path"] if "://" in info["path"] else posixpath.join(output_dir, info["path"])
    size = size_of(path)
    if size is None:
      problems.append(f"{path}: missing (the manifest lists it)")
      continue
    if "bytes" in info and size != info["bytes"]:
      problems.append(f"{path}: {size} bytes, the manifest records {info['bytes']} (truncated, "
                      "emptied or replaced after the run)")
      continue
    if open_binary is None or "sha256" not in info:
      continue
    try:
      digest, records = digest_and_count(open_binary, path, "records" in info)
    except ValueError as e:
      problems.append(f"{path}: {e}")
      continue
    if digest != info["sha256"]:
      problems.append(f"{path}: sha256 {digest}, the manifest records {info['sha256']} (its "
                      "content changed after the run)")
    elif records is not None and records != info["records"]:
      problems.append(f"{path}: {records} records, the manifest records {info['records']}")
  return problems


def check_shard_set(output_dir: str, manifest: dict, slug: str, split: str,
                    found: Iterable[str]) -> list[str]:
  """Problems if the shard files found for (slug, split) are not exactly the manifest's."""
  listed = {i["path"] for i in shard_infos(manifest, slug, split)}
  found = {relative_path(output_dir, f) for f in found}
  problems = [f"{posixpath.join(output_dir, p)}: missing (the manifest lists it)"
              for p in sorted(listed - found)]
  problems += [f"{posixpath.join(output_dir, p)}: not in the manifest (left by another run, or "
               "copied in after it)" for p in sorted(found - listed)]
  return problems
