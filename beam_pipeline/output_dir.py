"""The job's output directory: what is ours, an exclusive lock, and a run built beside the last.

Rules (each proved in tests/test_output_safety.py):

- Ours is only what a run recorded: the paths its manifest lists (shards, stats, dead letters,
  the manifest itself), our verify report, a staging directory marked IN_PROGRESS.json, the
  lock, the switch journal and the artifact cache (`artifacts/`, never deleted). Anything else
  in the directory stops the job before it touches a file, naming what it found.
- One job at a time: `.lock` is created exclusively (O_EXCL locally; a create-only-if-absent
  precondition on gs://). A second job is refused with the lock's owner (host, pid, start);
  a lock whose process is gone from this host is reported as stale; `--break_lock` removes a
  lock you know to be stale (e.g. left by a job killed on another machine).
- A run is built in `.staging-<run id>/` beside the previous complete run, which stays
  readable and untouched until the new run has finished and its accounting holds. Then the
  switch-over: a journal (`.switch.json`) is written, the old manifest goes first (the
  directory briefly holds no complete run, and readers say so), then exactly the old run's
  recorded files, then the new files are renamed into place and the new manifest is written
  last. A job killed during the switch leaves the journal, and the next job in that directory
  finishes the switch before anything else (the staged run is complete, so nothing is lost).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import posixpath
import shutil
import socket
import uuid

from apache_beam.io.filesystems import FileSystems

from beam_pipeline.options import ConfigError
from neural_compression import output_layout as layout
from neural_compression import run_manifest as rm


def _is_local(path: str) -> bool:
  return "://" not in path or path.startswith("file://")


def _local(path: str) -> str:
  return path[len("file://"):] if path.startswith("file://") else path


def read_bytes(path: str) -> bytes:
  with FileSystems.open(path) as f:
    return f.read()


def list_files(directory: str) -> list[str]:
  """Every file below `directory`, as paths relative to it, sorted (hidden files included)."""
  if _is_local(directory):
    root = _local(directory)
    out = []
    for dirpath, dirnames, names in os.walk(root):
      # A link to a directory is listed as an entry of its own (never walked into): it is
      # nothing a run writes, and deleting through it could reach files elsewhere.
      names = names + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
      out += [os.path.relpath(os.path.join(dirpath, n), root) for n in names]
    return sorted(p.replace(os.sep, "/") for p in out)
  metas = FileSystems.match([posixpath.join(directory, "**")])[0].metadata_list
  return sorted(rm.relative_path(directory, m.path) for m in metas)


def write_file(path: str, data: bytes) -> None:
  """Writes `path` so that a reader sees the old content or the new, never a part.

  Local: a temporary sibling renamed over the target (os.replace is atomic). Object stores
  (gs://, s3://) make an object visible only once its upload completes, so a direct create
  already is.
  """
  if _is_local(path):
    target = _local(path)
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    tmp = f"{target}.tmp-{uuid.uuid4().hex}"
    with open(tmp, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, target)
    return
  with FileSystems.create(path) as f:
    f.write(data)


def _delete(paths: list[str]) -> None:
  existing = [p for p in paths if FileSystems.exists(p)]
  if existing:
    FileSystems.delete(existing)


def _remove_empty_dirs(directory: str) -> None:
  """Removes empty subdirectories left after deleting files (local only; object stores have none)."""
  if not _is_local(directory):
    return
  root = _local(directory)
  for dirpath, dirnames, filenames in os.walk(root, topdown=False):
    if dirpath != root and not dirnames and not filenames:
      with contextlib.suppress(OSError):
        os.rmdir(dirpath)


# ------------------------------------------------------------------------------------------------
# What is in a directory.


@dataclasses.dataclass
class OutputState:
  """What `inspect` found in an output directory (read-only)."""
  output_dir: str
  exists: bool
  manifest: dict | None = None
  foreign: list[str] = dataclasses.field(default_factory=list)
  stale_staging: list[str] = dataclasses.field(default_factory=list)  # staging dir names
  journal: dict | None = None
  verify_report: bool = False


def _our_verify_report(directory: str) -> bool:
  try:
    report = json.loads(read_bytes(posixpath.join(directory, rm.VERIFY_REPORT)))
  except (OSError, ValueError):
    return False
  # Version 1 reports were a bare list of mismatches.
  return isinstance(report, list) or (isinstance(report, dict)
                                      and report.get("format") == rm.VERIFY_FORMAT)


# Our top-level files; an interrupted atomic write may leave '<name>.tmp-<hex>' beside one.
_TOP_LEVEL_FILES = (layout.MANIFEST, rm.VERIFY_REPORT, rm.SWITCH_JOURNAL)


def inspect(output_dir: str) -> OutputState:
  """Reads what `output_dir` holds; raises ConfigError if it cannot be an output directory.

  Raises ConfigError (touching nothing) if the path is a file, or its manifest is corrupt.
  """
  if _is_local(output_dir):
    local = _local(output_dir)
    if os.path.exists(local) and not os.path.isdir(local):
      raise ConfigError(f"--output_dir={output_dir} is a file, not a directory; pick a directory")
    if not os.path.isdir(local):
      return OutputState(output_dir, exists=False)
  files = list_files(output_dir)
  state = OutputState(output_dir, exists=bool(files) or _is_local(output_dir))
  manifest_path = posixpath.join(output_dir, layout.MANIFEST)
  if layout.MANIFEST in files:
    try:
      state.manifest = rm.parse_manifest(read_bytes(manifest_path), manifest_path)
    except rm.ManifestError as e:
      raise ConfigError(f"{e}. The job cannot tell which files there are its own, so it touches "
                        "none of them (not even with --overwrite): move the directory away or "
                        "pick another --output_dir") from None
  if rm.SWITCH_JOURNAL in files:
    journal_path = posixpath.join(output_dir, rm.SWITCH_JOURNAL)
    try:
      state.journal = json.loads(read_bytes(journal_path))
      staging_name = state.journal["staging"]
      paths = state.journal["old_files"] + state.journal["new_files"]
      if not (isinstance(staging_name, str) and staging_name.startswith(rm.STAGING_PREFIX)
              and "/" not in staging_name and all(rm.is_inside(p) for p in paths)):
        raise ValueError("it names paths outside the directory")
    except (ValueError, KeyError, TypeError) as e:
      raise ConfigError(f"{journal_path} is not a switch journal of ours ({e}); move the "
                        "directory away or pick another --output_dir") from None
  owned = rm.recorded_paths(state.manifest) if state.manifest else set()
  if state.journal:
    owned |= set(state.journal.get("old_files", [])) | set(state.journal.get("new_files", []))
  staging = {p.split("/", 1)[0] for p in files if p.startswith(rm.STAGING_PREFIX)}
  marked = {d for d in staging if f"{d}/{rm.IN_PROGRESS}" in files}
  journal_staging = state.journal.get("staging") if state.journal else None
  state.stale_staging = sorted(marked - {journal_staging})
  state.verify_report = rm.VERIFY_REPORT in files and _our_verify_report(output_dir)
  for path in files:
    top = path.split("/", 1)[0]
    if (path in owned or top == rm.ARTIFACTS_SUBDIR or path in (rm.LOCK, rm.SWITCH_JOURNAL)
        or top in marked or (path == rm.VERIFY_REPORT and state.verify_report)
        or path.split(".tmp-", 1)[0] in _TOP_LEVEL_FILES):
      continue
    state.foreign.append(path)
  return state


def refuse_foreign(state: OutputState) -> None:
  """ConfigError naming the files in the directory that no run of ours recorded."""
  if not state.foreign:
    return
  shown = ", ".join(state.foreign[:5]) + (f" and {len(state.foreign) - 5} more"
                                          if len(state.foreign) > 5 else "")
  what = ("files its manifest does not list" if state.manifest
          else "files and no manifest of a run of ours")
  raise ConfigError(f"--output_dir={state.output_dir} holds {what}: {shown}. The job writes only "
                    "into an empty directory or over a run of its own, and never deletes files "
                    "it did not record; use an empty or new --output_dir (or move those away)")


# ------------------------------------------------------------------------------------------------
# The lock.


def _lock_owner() -> dict:
  return {"host": socket.gethostname(), "pid": os.getpid(),
          "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def _create_exclusively(path: str, data: bytes) -> bool:
  """Creates `path` holding `data` only if it does not exist; False if it already did."""
  if _is_local(path):
    try:
      fd = os.open(_local(path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    return True
  if path.startswith("gs://"):
    try:
      from google.cloud import exceptions as gcs_exceptions  # apache-beam[gcp]
      from google.cloud import storage
    except ImportError as e:
      raise ConfigError("a lock on gs:// needs google-cloud-storage (pip install "
                        "'apache-beam[gcp]', as the Dataflow image has)") from e
    bucket, _, name = path[len("gs://"):].partition("/")
    blob = storage.Client().bucket(bucket).blob(name)
    try:
      blob.upload_from_string(data, if_generation_match=0)  # only if no object exists
    except gcs_exceptions.PreconditionFailed:
      return False
    return True
  # Other filesystems offer no create-if-absent through Beam: check, create, read back.
  if FileSystems.exists(path):
    return False
  with FileSystems.create(path) as f:
    f.write(data)
  return read_bytes(path) == data


def _describe_lock(path: str) -> str:
  try:
    owner = json.loads(read_bytes(path))
  except (OSError, ValueError):
    return f"{path} (unreadable)"
  text = (f"{path}: run {owner.get('run_id')} by pid {owner.get('pid')} on host "
          f"{owner.get('host')}, started {owner.get('started')}")
  if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
    try:
      os.kill(owner["pid"], 0)
    except ProcessLookupError:
      text += " - STALE: that process no longer runs on this host"
    except PermissionError:
      pass
  return text


@contextlib.contextmanager
def locked(output_dir: str, run_id: str, break_lock: bool = False):
  """Holds `<output_dir>/.lock` for the duration; ConfigError if another job holds it."""
  path = posixpath.join(output_dir, rm.LOCK)
  if _is_local(output_dir):
    os.makedirs(_local(output_dir), exist_ok=True)
  data = json.dumps({"run_id": run_id, **_lock_owner()}).encode()
  if break_lock and FileSystems.exists(path):
    _delete([path])
  if not _create_exclusively(path, data):
    raise ConfigError(
        f"another job holds the lock on --output_dir={output_dir}: {_describe_lock(path)}. Wait "
        "for it, or pick another --output_dir. If no job is running (the lock is stale: its "
        f"process was killed), remove {path} or rerun with --break_lock")
  try:
    yield
  finally:
    with contextlib.suppress(OSError):
      if FileSystems.exists(path) and json.loads(read_bytes(path)).get("run_id") == run_id:
        FileSystems.delete([path])


# ------------------------------------------------------------------------------------------------
# Staging and the switch-over.


def staging_dir(output_dir: str, run_id: str) -> str:
  return posixpath.join(output_dir, rm.STAGING_PREFIX + run_id)


def create_staging(output_dir: str, run_id: str, flags: dict) -> str:
  """Makes the directory a run is built in, marked as ours; returns its path."""
  staging = staging_dir(output_dir, run_id)
  write_file(posixpath.join(staging, rm.IN_PROGRESS),
             json.dumps({"run_id": run_id, "flags": flags, **_lock_owner()}).encode())
  return staging


def remove_tree(directory: str) -> None:
  """Deletes a directory of the job's own making and everything in it (any filesystem)."""
  if _is_local(directory):
    shutil.rmtree(_local(directory), ignore_errors=True)
    return
  _delete([posixpath.join(directory, p) for p in list_files(directory)])


def remove_staging(staging: str) -> None:
  """Deletes a staging directory of ours (it must hold IN_PROGRESS.json)."""
  if FileSystems.exists(posixpath.join(staging, rm.IN_PROGRESS)):
    remove_tree(staging)


def remove_stale_staging(state: OutputState) -> None:
  """Deletes staging directories that crashed runs left (we hold the lock, so none is live)."""
  for name in state.stale_staging:
    remove_staging(posixpath.join(state.output_dir, name))


def _staged_files(staging: str) -> list[str]:
  return [p for p in list_files(staging) if p != rm.IN_PROGRESS]


def switch_over(output_dir: str, staging: str, old_manifest: dict | None,
                old_verify_report: bool = False) -> None:
  """Replaces the previous run (if any) by the complete run in `staging` (see module doc)."""
  staged_manifest = rm.parse_manifest(read_bytes(posixpath.join(staging, layout.MANIFEST)),
                                      posixpath.join(staging, layout.MANIFEST))
  new_files = sorted(rm.recorded_paths(staged_manifest))
  old_files = sorted(rm.recorded_paths(old_manifest)) if old_manifest else []
  if old_verify_report:
    old_files.append(rm.VERIFY_REPORT)
  journal = {"staging": posixpath.basename(staging), "old_files": old_files,
             "new_files": new_files}
  write_file(posixpath.join(output_dir, rm.SWITCH_JOURNAL), json.dumps(journal).encode())
  finish_switch(output_dir, journal)


def finish_switch(output_dir: str, journal: dict) -> None:
  """Carries out (or finishes, after a crash) the switch-over a journal describes. Idempotent."""
  staging = posixpath.join(output_dir, journal["staging"])
  join = lambda p: posixpath.join(output_dir, p)
  new_files = set(journal["new_files"])
  # The old manifest first: from here to the new manifest, readers see no complete run.
  staged_manifest = posixpath.join(staging, layout.MANIFEST)
  if FileSystems.exists(staged_manifest):
    _delete([join(layout.MANIFEST)])
  # Exactly the old run's recorded files; a path the new run also writes is replaced by the
  # rename below instead (deleting it here could delete a new file already moved, on a resume).
  _delete([join(p) for p in journal["old_files"] if p not in new_files])
  for rel in sorted(new_files - {layout.MANIFEST}):
    src = posixpath.join(staging, rel)
    if FileSystems.exists(src):
      if _is_local(output_dir):
        os.makedirs(os.path.dirname(_local(join(rel))), exist_ok=True)
      FileSystems.rename([src], [join(rel)])
  if FileSystems.exists(staged_manifest):
    write_file(join(layout.MANIFEST), read_bytes(staged_manifest))  # last: the run is complete
  remove_staging(staging)
  _delete([join(rm.SWITCH_JOURNAL)])
  _remove_empty_dirs(output_dir)


def finish_interrupted_switch(state: OutputState) -> OutputState:
  """If a job died during its switch-over, finishes it; returns the directory's new state."""
  if not state.journal:
    return state
  finish_switch(state.output_dir, state.journal)
  return inspect(state.output_dir)
