"""The main job: documents -> runs -> examples -> every method -> TFRecords + stats + manifest."""
from __future__ import annotations

import base64
import datetime
import hashlib
import json
import posixpath
import time

import apache_beam as beam
import yaml
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipeline import artifacts as artifacts_lib
from beam_pipeline import compress
from beam_pipeline import options as options_lib
from beam_pipeline import runs
from beam_pipeline import sources
from beam_pipeline import write
from neural_compression import m2_examples
from neural_compression import methods
from neural_compression import output_layout as layout

FILE_LIST = ".files.json"
DEAD_LETTERS = "dead_letters.jsonl"
# Flags that define a run's content; the others (runner, paths) don't change the records.
CONTENT_FLAGS = ("source", "input", "validation_input", "validation_percent", "methods",
                 "docs_per_run", "example_bytes", "examples_per_run", "run_buckets",
                 "m2_length", "m2_mode", "num_shards", "static_unigram", "spm_model",
                 "spm_train_docs_permille")


class ConfigError(ValueError):
  """A configuration that cannot work; raised before the job starts. Says what to change."""


def content_flags(opts) -> dict:
  return {k: getattr(opts, k) for k in CONTENT_FLAGS}


def directory_checksum(path: str) -> str:
  """sha256 over (name, sha256(content)) of the files directly in a directory."""
  match = FileSystems.match([posixpath.join(path, "*")])[0].metadata_list
  h = hashlib.sha256()
  for meta in sorted(match, key=lambda m: m.path):
    h.update(posixpath.basename(meta.path).encode() + b"\0")
    h.update(hashlib.sha256(artifacts_lib.read_bytes(meta.path)).digest())
  return h.hexdigest()


def validate(opts) -> list[methods.MethodSpec]:
  """Checks flags before anything runs; returns the parsed methods."""
  if opts.full_corpus:
    opts.examples_per_run = 0
  try:
    specs = methods.parse_methods(opts.methods)
  except methods.MethodError as e:
    raise ConfigError(f"--methods: {e}") from None
  for spec in specs:
    unit = m2_examples.token_unit(spec.window_bits, spec.token_bits)
    if opts.m2_length < unit:
      raise ConfigError(f"--m2_length={opts.m2_length} holds no whole window of {spec.name} "
                        f"({unit} tokens); raise it")
  for flag in ("docs_per_run", "example_bytes", "run_buckets", "num_shards", "batch_size",
               "m2_length"):
    if getattr(opts, flag) < 1:
      raise ConfigError(f"--{flag} must be >= 1, got {getattr(opts, flag)}")
  if opts.examples_per_run < 0:
    raise ConfigError("--examples_per_run must be >= 0 (0 keeps every example)")
  if not 0 <= opts.validation_percent <= 100:
    raise ConfigError("--validation_percent must be in [0, 100]")
  if opts.source != "default" and not opts.input:
    raise ConfigError(f"--source={opts.source} needs --input (a file pattern or TFDS data_dir)")
  if opts.source == "default" and (opts.input or opts.validation_input):
    raise ConfigError("--source=default reads the embedded corpus: drop --input/--validation_input")
  if any(s.uses_m1 for s in specs):
    from neural_compression.m1 import engine as exact_engine
    try:
      exact_engine.verify_checkpoint(compress.local_copy(opts.m1_checkpoint))
    except (OSError, ValueError) as e:
      raise ConfigError(f"--m1_checkpoint={opts.m1_checkpoint}: {e}") from None
  return specs


def _ours(name: str) -> bool:
  """Whether a top-level entry of an output directory is something a run writes."""
  if name in (layout.MANIFEST, layout.STATS, FILE_LIST, DEAD_LETTERS, "verify.json",
              "artifacts") or name.startswith(".tmp-"):
    return True
  return any(name == kind or name.startswith(kind + "_") for kind in methods.KINDS)


def prepare_output_dir(opts) -> None:
  """Refuses to mix runs: an existing run with other content flags needs --overwrite; the old
  run's files are removed before the new run writes (artifacts are kept). A directory holding
  anything a run does not write is refused outright, so a wrong path never deletes user files."""
  manifest = posixpath.join(opts.output_dir, layout.MANIFEST)
  if FileSystems.exists(manifest):
    old = json.loads(artifacts_lib.read_bytes(manifest))
    if old.get("flags") != content_flags(opts) and not opts.overwrite:
      changed = sorted(k for k in CONTENT_FLAGS if old.get("flags", {}).get(k) != getattr(opts, k))
      raise ConfigError(f"--output_dir={opts.output_dir} holds a different run (flags differ: "
                        f"{', '.join(changed)}); pass --overwrite to replace it or pick another "
                        "--output_dir")
  if not FileSystems.exists(opts.output_dir):
    FileSystems.mkdirs(opts.output_dir)
    return
  entries = {}
  # '**' lists every file below (Beam filesystems list files, not directories).
  for meta in FileSystems.match([posixpath.join(opts.output_dir, "**")])[0].metadata_list:
    rel = posixpath.relpath(meta.path, opts.output_dir) if "://" not in meta.path else \
        meta.path[len(opts.output_dir.rstrip("/")) + 1:]
    entries.setdefault(rel.split("/", 1)[0], []).append(meta.path)
  foreign = sorted(name for name in entries if not _ours(name))
  if foreign:
    raise ConfigError(f"--output_dir={opts.output_dir} holds files this job did not write "
                      f"({', '.join(foreign[:5])}); use an empty or new directory")
  # The manifest goes first: from here on the directory holds no complete run.
  if FileSystems.exists(manifest):
    FileSystems.delete([manifest])
  stale = [path for name, paths in entries.items() if name not in ("artifacts", layout.MANIFEST)
           for path in paths]
  if stale:
    FileSystems.delete(stale)


def _read(p, opts, pattern, label):
  return sources.read_documents(p, opts.source, pattern, with_dead_letters=True, label=label)


def read_examples(p, opts):
  """Reads the documents of the run's source and cuts them into examples.

  Returns (PCollection[(example_id, symbols)], dead letters). Shared with beam_pipeline.verify,
  which rebuilds a run's source examples the same way.
  """
  make_examples = lambda fixed: runs.DocumentsToExamples(
      opts.docs_per_run, opts.example_bytes, opts.examples_per_run, opts.run_buckets,
      opts.validation_percent, fixed)
  docs, dead = _read(p, opts, opts.input, "ReadDocuments")
  if not opts.validation_input:
    return docs | "Examples" >> make_examples(None), dead
  val_docs, val_dead = _read(p, opts, opts.validation_input, "ReadValidation")
  examples = ((docs | "TrainExamples" >> make_examples("train"),
               val_docs | "ValidationExamples" >> make_examples("validation"))
              | "AllExamples" >> beam.Flatten())
  return examples, (dead, val_dead) | "AllDeadLetters" >> beam.Flatten()


def build(p, opts, specs, artifacts: compress.Artifacts):
  """Adds the job's stages to pipeline `p`."""
  examples, dead = read_examples(p, opts)
  records, stats = examples | "CompressExamples" >> compress.CompressExamples(
      specs, artifacts, opts.m2_length, opts.m2_mode, opts.batch_size,
      opts.fail_once_for_testing)
  files = records | "WriteRecords" >> write.WriteShardedRecords(opts.output_dir, opts.num_shards)
  bits_per_token = {s.slug: _bits_per_token(s, artifacts) for s in specs}
  _ = stats | "WriteStats" >> write.WriteStats(opts.output_dir, bits_per_token, layout.STATS)
  _ = files | "WriteFileList" >> write.WriteFileList(opts.output_dir, FILE_LIST)
  _ = dead | "WriteDeadLetters" >> _WriteDeadLetters(posixpath.join(opts.output_dir, DEAD_LETTERS))


def _bits_per_token(spec, artifacts) -> float:
  """A method's bits per token without loading M1 (its tokens carry N bits each)."""
  if spec.kind in ("bytes", "spm"):
    return methods.build_compressor(spec, spm_model_proto=artifacts.spm_model_proto).bits_per_token
  return float(spec.token_bits)


class _WriteDeadLetters(beam.PTransform):
  """Writes every dead letter (file, line, reason, base64 raw bytes) as sorted JSON lines."""

  def __init__(self, path):
    super().__init__()
    self._path = path

  def expand(self, dead):
    path = self._path

    def write_all(items):
      lines = sorted(json.dumps({**d, "raw": base64.b64encode(d["raw"]).decode()},
                                sort_keys=True) for d in items)
      write.write_atomically(path, ("\n".join(lines) + ("\n" if lines else "")).encode())
      return len(lines)

    return dead | "Gather" >> beam.combiners.ToList() | "Write" >> beam.Map(write_all)


def _counters(result) -> dict:
  out = {}
  for c in result.metrics().query()["counters"]:
    key = f"{c.key.metric.namespace}/{c.key.metric.name}"
    out[key] = out.get(key, 0) + (c.committed if c.committed is not None else c.attempted)
  return dict(sorted(out.items()))


class AccountingError(RuntimeError):
  """The run's counters do not account for every input byte; the run is not marked complete."""


def accounting(counters: dict, stats: dict) -> dict:
  """The byte and document identities every run must satisfy, with both sides of each."""
  g = lambda name: counters.get(name, 0)
  checks = {
      # Every input unit was emitted as a document or dead-lettered (decompressed bytes).
      "source bytes read == emitted + dead-lettered": (
          g("sources/bytes_read"), g("sources/bytes_emitted") + g("sources/bytes_dead_lettered")),
      "documents read == documents in runs": (g("sources/documents_read"),
                                              g("runs/documents_in_runs")),
      # Text bytes plus one EOS per document all land in examples or the unsampled remainder.
      "document bytes + EOS == bytes in examples + not sampled": (
          g("runs/document_text_bytes") + g("runs/eos_symbols"),
          g("runs/bytes_in_examples") + g("runs/bytes_not_sampled")),
  }
  for slug, by_split in stats.items():
    total = sum(s["input_bytes"] for s in by_split.values())
    covered = sum(s["m2_raw_bytes"] + s["bytes_trimmed"] for s in by_split.values())
    checks[f"{slug}: bytes compressed == bytes in examples"] = (total, g("runs/bytes_in_examples"))
    checks[f"{slug}: M2 bytes + trimmed == bytes compressed"] = (covered, total)
  return {name: {"lhs": lhs, "rhs": rhs, "ok": lhs == rhs} for name, (lhs, rhs) in checks.items()}


def run(argv: list[str] | None = None) -> dict:
  """Runs the job; returns the manifest. Raises ConfigError before starting on bad flags."""
  try:
    argv = options_lib.expand_runner_config(list(argv or []))
  except (OSError, ValueError, yaml.YAMLError) as e:
    raise ConfigError(str(e)) from e
  pipeline_options = PipelineOptions(argv)
  opts = pipeline_options.view_as(options_lib.CompressionOptions)
  specs = validate(opts)
  prepare_output_dir(opts)
  started = time.time()
  prepared = artifacts_lib.prepare(opts, pipeline_options, specs)
  artifacts = compress.Artifacts(
      m1_checkpoint=opts.m1_checkpoint if any(s.uses_m1 for s in specs) else None, **prepared)
  p = beam.Pipeline(options=pipeline_options)
  build(p, opts, specs, artifacts)
  result = p.run()
  result.wait_until_finish()
  files = json.loads(artifacts_lib.read_bytes(posixpath.join(opts.output_dir, FILE_LIST)))
  stats = json.loads(artifacts_lib.read_bytes(posixpath.join(opts.output_dir, layout.STATS)))
  counters = _counters(result)
  checks = accounting(counters, stats)
  broken = {k: v for k, v in checks.items() if not v["ok"]}
  if broken:
    raise AccountingError(f"the run's counters do not add up, output left incomplete: {broken}")
  manifest = {
      "format": "neural_compression.run_manifest",
      "version": 1,
      "flags": content_flags(opts),
      "methods": [s.name for s in specs],
      "m1_checksum": (directory_checksum(opts.m1_checkpoint)
                      if any(s.uses_m1 for s in specs) else None),
      "static_unigram_sha256": (hashlib.sha256(prepared["static_unigram_json"].encode()).hexdigest()
                                if prepared["static_unigram_json"] else None),
      "spm_model_sha256": (hashlib.sha256(prepared["spm_model_proto"]).hexdigest()
                           if prepared["spm_model_proto"] else None),
      "files": files,
      "records": {f"{s}/{split}": sum(f["records"] for f in files
                                      if f["method"] == s and f["split"] == split)
                  for s in stats for split in stats[s]},
      "counters": counters,
      "accounting": checks,
      "wall_seconds": round(time.time() - started, 1),
      "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
  }
  if FileSystems.exists(posixpath.join(opts.output_dir, FILE_LIST)):
    FileSystems.delete([posixpath.join(opts.output_dir, FILE_LIST)])
  # Written last: its presence marks a complete run.
  write.write_atomically(posixpath.join(opts.output_dir, layout.MANIFEST),
                         json.dumps(manifest, indent=1, sort_keys=True).encode())
  manifest["stats"] = stats
  manifest["output_dir"] = opts.output_dir if "://" in opts.output_dir else posixpath.abspath(
      opts.output_dir)
  return manifest


def summary_table(manifest: dict) -> str:
  """A per-method, per-split table of the run's figures."""
  rows = [f"{'method':34s} {'split':10s} {'examples':>8s} {'bytes':>11s} {'tokens':>10s} "
          f"{'bytes/tok':>9s} {'bit ratio':>9s} {'M2 ex':>6s}"]
  for slug, by_split in sorted(manifest["stats"].items()):
    for split, s in sorted(by_split.items()):
      rows.append(f"{slug:34s} {split:10s} {s['examples']:8d} {s['input_bytes']:11,d} "
                  f"{s['tokens']:10,d} {s['token_compression_ratio']:9.3f} "
                  f"{s['bit_compression_ratio']:9.3f} {s['m2_examples']:6d}")
  return "\n".join(rows)
