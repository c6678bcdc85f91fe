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
import re
import shutil
import socket
import uuid

from apache_beam.io.filesystems import FileSystems

from beam_pipeline.options import ConfigError
from neural_compression import output_layout as layout
from neural_compression import run_manifest as rm


def _is_local(path: str) -> bool:
  return "://" not in path


def read_bytes(path: str) -> bytes:
  with FileSystems.open(path) as f:
    return f.read()


def list_files(directory: str) -> list[str]:
  """Every file below `directory`, as paths relative to it, sorted (hidden files included).

  Locally, a symbolic link (to a file or a directory, never followed) and an empty directory
  are entries too, the latter as 'path/': neither is anything a run writes.
  """
  if _is_local(directory):
    root = directory
    out = []
    for dirpath, dirnames, names in os.walk(root):
      links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
      out += [os.path.relpath(os.path.join(dirpath, n), root) for n in names + links]
      if dirpath != root and not dirnames and not names:
        out.append(os.path.relpath(dirpath, root) + "/")
    return sorted(p.replace(os.sep, "/") for p in out)
  metas = FileSystems.match([posixpath.join(directory, "**")])[0].metadata_list
  return sorted(rm.relative_path(directory, m.path) for m in metas)


def _is_link(directory: str, rel: str) -> bool:
  return _is_local(directory) and os.path.islink(os.path.join(directory, rel))


def write_file(path: str, data: bytes) -> None:
  """Writes `path` so that a reader sees the old content or the new, never a part.

  Local: a temporary sibling renamed over the target (os.replace is atomic). Object stores
  (gs://, s3://) make an object visible only once its upload completes, so a direct create
  already is.
  """
  if _is_local(path):
    with atomic_writer(path) as f:
      f.write(data)
    return
  with FileSystems.create(path) as f:
    f.write(data)


@contextlib.contextmanager
def atomic_writer(path: str):
  """A file to write `path` through in pieces; `path` appears, whole, only if the block ends
  without an exception (a temporary sibling, then a rename), else the temporary file goes."""
  tmp = f"{path}.tmp-{uuid.uuid4().hex}"
  if _is_local(path):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    try:
      with open(tmp, "wb") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())
      os.replace(tmp, path)
    except BaseException:
      with contextlib.suppress(FileNotFoundError):
        os.remove(tmp)
      raise
    return
  # An object store commits an upload when it is closed, even after a failure: write a
  # temporary object and rename it only once it is complete.
  try:
    with FileSystems.create(tmp) as f:
      yield f
    FileSystems.rename([tmp], [path])
  except BaseException:
    with contextlib.suppress(Exception):
      FileSystems.delete([tmp])
    raise


def _delete(paths: list[str]) -> None:
  """Deletes exactly these files (local paths are never read as globs)."""
  local = [p for p in paths if _is_local(p)]
  for path in local:
    with contextlib.suppress(FileNotFoundError):
      os.remove(path)
  remote = [p for p in paths if not _is_local(p) and FileSystems.exists(p)]
  if remote:
    FileSystems.delete(remote)


def _remove_emptied_dirs(directory: str, deleted: list[str]) -> None:
  """Removes the directories that deleting `deleted` left empty, up to `directory` (local only;
  object stores have no directories). A directory that was empty before is not touched."""
  if not _is_local(directory):
    return
  root = os.path.abspath(directory)
  parents = {os.path.dirname(os.path.abspath(p)) for p in deleted}
  for parent in sorted(parents, key=len, reverse=True):
    while parent.startswith(root + os.sep) and os.path.isdir(parent) and not os.listdir(parent):
      os.rmdir(parent)
      parent = os.path.dirname(parent)


# ------------------------------------------------------------------------------------------------
# What is in a directory.


@dataclasses.dataclass
class OutputState:
  """What `inspect` found in an output directory (read-only)."""
  output_dir: str
  manifest: dict | None = None
  foreign: list[str] = dataclasses.field(default_factory=list)
  stale_staging: list[str] = dataclasses.field(default_factory=list)  # staging dir names
  journal: dict | None = None
  verify_report: bool = False


def _our_verify_report(directory: str, manifest: dict | None) -> bool:
  try:
    report = json.loads(read_bytes(posixpath.join(directory, rm.VERIFY_REPORT)))
  except (OSError, ValueError):
    return False
  if isinstance(report, dict):
    return report.get("format") == rm.VERIFY_FORMAT
  # Version 1 reports were a bare list of mismatches: ours only beside a version-1 run.
  return (isinstance(report, list) and manifest is not None and manifest.get("version") == 1
          and all(isinstance(r, dict) and {"method", "example_id", "reason"} <= set(r)
                  for r in report))


# Our top-level files; an interrupted atomic write leaves '<name>.tmp-<32 hex digits>' beside one.
_TOP_LEVEL_FILES = (layout.MANIFEST, rm.VERIFY_REPORT, rm.SWITCH_JOURNAL)
_TMP_SUFFIX = re.compile(r"\.tmp-[0-9a-f]{32}$")


def _our_tmp_file(path: str) -> bool:
  match = _TMP_SUFFIX.search(path)
  return bool(match) and path[:match.start()] in _TOP_LEVEL_FILES


def _read_journal(output_dir: str) -> dict:
  journal_path = posixpath.join(output_dir, rm.SWITCH_JOURNAL)
  try:
    journal = json.loads(read_bytes(journal_path))
    staging_name = journal["staging"]
    paths = journal["old_files"] + journal["new_files"]
    if not (isinstance(staging_name, str) and staging_name.startswith(rm.STAGING_PREFIX)
            and "/" not in staging_name and all(rm.is_inside(p) for p in paths)):
      raise ValueError("it names paths outside the directory")
  except (ValueError, KeyError, TypeError) as e:
    raise ConfigError(f"{journal_path} is not a switch journal of ours ({e}); move the "
                      "directory away or pick another --output_dir") from None
  return journal


def inspect(output_dir: str, cache_dir: str | None = None) -> OutputState:
  """Reads what `output_dir` holds; raises ConfigError if it cannot be an output directory.

  Raises ConfigError (touching nothing) if the path is a file or cannot be listed, or its
  manifest or journal is corrupt. `cache_dir`: the artifact cache, ours wherever it is.
  """
  if _is_local(output_dir):
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
      raise ConfigError(f"--output_dir={output_dir} is a file, not a directory; pick a directory")
    if not os.path.isdir(output_dir):
      return OutputState(output_dir)
  try:
    files = list_files(output_dir)
  except Exception as e:  # pylint: disable=broad-except  (no such filesystem, no credentials...)
    raise ConfigError(f"--output_dir={output_dir} cannot be listed: {type(e).__name__}: {e}"
                      ) from None
  state = OutputState(output_dir)
  manifest_path = posixpath.join(output_dir, layout.MANIFEST)
  if layout.MANIFEST in files:
    try:
      state.manifest = rm.relative_to(
          rm.parse_manifest(read_bytes(manifest_path), manifest_path), output_dir)
    except rm.ManifestError as e:
      raise ConfigError(f"{e}. The job cannot tell which files there are its own, so it touches "
                        "none of them (not even with --overwrite): move the directory away or "
                        "pick another --output_dir") from None
  if rm.SWITCH_JOURNAL in files:
    state.journal = _read_journal(output_dir)
  owned = rm.recorded_paths(state.manifest) if state.manifest else set()
  ours = set()  # top-level directories that are ours whole
  if state.journal:
    journal_files = set(state.journal["old_files"]) | set(state.journal["new_files"])
    owned |= journal_files
    # A switch killed after emptying a directory of the old run's files (e.g. dead_letters/)
    # leaves it empty, and the journal: the directory is that switch's to remove.
    owned |= {f.rsplit("/", i)[0] + "/" for f in journal_files for i in range(1, f.count("/") + 1)}
    ours.add(state.journal["staging"])  # the complete staged run, marker or not
  staging = {p.split("/", 1)[0] for p in files if p.startswith(rm.STAGING_PREFIX)}
  marked = {d for d in staging if f"{d}/{rm.IN_PROGRESS}" in files}
  state.stale_staging = sorted(marked - ours)
  ours |= marked
  cache_prefix = None
  if cache_dir:
    try:
      cache_prefix = rm.relative_path(output_dir, cache_dir).rstrip("/") + "/"
    except ValueError:
      cache_prefix = None  # the cache lives elsewhere
    if cache_prefix and (cache_prefix.startswith("../") or cache_prefix in ("./", "/")):
      cache_prefix = None
  else:
    cache_prefix = rm.ARTIFACTS_SUBDIR + "/"
  state.verify_report = (rm.VERIFY_REPORT in files
                         and _our_verify_report(output_dir, state.manifest))
  for path in files:
    top = path.split("/", 1)[0]
    if _is_link(output_dir, path.rstrip("/")):
      state.foreign.append(path)  # never ours, and never to be followed
    elif (path in owned or top in ours or path in (rm.LOCK, rm.SWITCH_JOURNAL)
          or (cache_prefix and path.startswith(cache_prefix) and not path.endswith("/"))
          or (path == rm.VERIFY_REPORT and state.verify_report) or _our_tmp_file(path)):
      continue
    else:
      state.foreign.append(path)
  if cache_prefix and _is_link(output_dir, cache_prefix.rstrip("/")):
    state.foreign.append(cache_prefix)
  state.foreign = sorted(set(state.foreign))
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
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
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


def _lock_holder(path: str) -> tuple[dict | None, bool]:
  """(the lock's owner record, whether it is known to be stale: its pid is gone from this host)."""
  try:
    owner = json.loads(read_bytes(path))
  except (OSError, ValueError):
    return None, False
  if not isinstance(owner, dict):
    return None, False
  if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
    try:
      os.kill(owner["pid"], 0)
    except ProcessLookupError:
      return owner, True
    except PermissionError:
      pass
  return owner, False


def _describe_lock(path: str) -> str:
  owner, stale = _lock_holder(path)
  if owner is None:
    return f"{path} (unreadable)"
  text = (f"{path}: run {owner.get('run_id')} by pid {owner.get('pid')} on host "
          f"{owner.get('host')}, started {owner.get('started')}")
  return text + (" - STALE: that process no longer runs on this host" if stale else "")


@contextlib.contextmanager
def locked(output_dir: str, run_id: str, break_lock: bool = False):
  """Holds `<output_dir>/.lock` for the duration; ConfigError if another job holds it.

  `break_lock` removes a lock first, unless its process still runs on this host.
  """
  path = posixpath.join(output_dir, rm.LOCK)
  if _is_local(output_dir):
    try:
      os.makedirs(output_dir, exist_ok=True)
    except OSError as e:
      raise ConfigError(f"--output_dir={output_dir} cannot be created: {e}") from None
  data = json.dumps({"run_id": run_id, **_lock_owner()}).encode()
  if break_lock and FileSystems.exists(path):
    owner, stale = _lock_holder(path)
    if owner and owner.get("host") == socket.gethostname() and not stale:
      raise ConfigError(f"--break_lock: the lock's job still runs ({_describe_lock(path)}); "
                        "wait for it or stop it first")
    _delete([path])
  try:
    created = _create_exclusively(path, data)
  except ConfigError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (OSError, gs:// Forbidden, no credentials)
    raise ConfigError(f"cannot take the lock {path}: {type(e).__name__}: {e}") from None
  if not created:
    raise ConfigError(
        f"another job holds the lock on --output_dir={output_dir}: {_describe_lock(path)}. Wait "
        "for it, or pick another --output_dir. If no job is running (the lock is stale: its "
        f"process was killed), remove {path} or rerun with --break_lock")
  try:
    yield
  finally:
    with contextlib.suppress(OSError, ValueError):
      if json.loads(read_bytes(path)).get("run_id") == run_id:
        _delete([path])


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
  """Deletes a directory of the job's own making and everything in it (any filesystem). Its
  IN_PROGRESS.json marker, if any, goes last, so a directory half deleted by a kill is still
  recognised as ours."""
  files = [posixpath.join(directory, p) for p in list_files(directory) if not p.endswith("/")]
  marker = posixpath.join(directory, rm.IN_PROGRESS)
  _delete([f for f in files if f != marker])  # a link goes itself, never its target
  _delete([marker])
  if _is_local(directory):
    shutil.rmtree(directory, ignore_errors=True)


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
        os.makedirs(os.path.dirname(join(rel)), exist_ok=True)
      FileSystems.rename([src], [join(rel)])
  if FileSystems.exists(staged_manifest):
    write_file(join(layout.MANIFEST), read_bytes(staged_manifest))  # last: the run is complete
  remove_tree(staging)  # the journal names it: ours, marker or not
  # Before the journal goes: a job killed here leaves the journal, and the next one repeats this
  # (idempotent) instead of finding an emptied directory (e.g. dead_letters/) it cannot own.
  _remove_emptied_dirs(output_dir, [join(p) for p in journal["old_files"]]
                       + [posixpath.join(staging, p) for p in journal["new_files"]])
  _delete([join(rm.SWITCH_JOURNAL)])


def inspect_finishing_switch(output_dir: str, cache_dir: str | None = None) -> OutputState:
  """`inspect`, after finishing a switch-over a killed job left (its journal); call it under
  the lock."""
  state = inspect(output_dir, cache_dir)
  if not state.journal:
    return state
  finish_switch(output_dir, state.journal)
  return inspect(output_dir, cache_dir)
