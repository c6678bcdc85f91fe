"""The main job: documents -> runs -> examples -> every method -> TFRecords + stats + manifest."""
from __future__ import annotations

import base64
import datetime
import glob
import hashlib
import json
import os
import posixpath
import re
import time

import apache_beam as beam
import yaml
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.options.pipeline_options import PortableOptions
from apache_beam.options.pipeline_options import StandardOptions

from beam_pipeline import artifacts as artifacts_lib
from beam_pipeline import compress
from beam_pipeline import grouping as grouping_lib
from beam_pipeline import options as options_lib
from beam_pipeline import output_dir as output_dir_lib
from beam_pipeline import runs
from beam_pipeline import sources
from beam_pipeline import write
from neural_compression import m2_examples
from neural_compression import methods
from neural_compression import output_layout as layout
from neural_compression import run_manifest as rm

FILE_LIST = ".files.json"
# Flags that define a run's content; the others (runner, paths) don't change the records.
CONTENT_FLAGS = ("source", "input", "validation_input", "validation_percent", "methods",
                 "docs_per_run", "example_bytes", "examples_per_run", "run_buckets",
                 "m2_length", "m2_mode", "num_shards", "static_unigram", "spm_model",
                 "spm_train_bytes", "text_field", "text_lines", "invalid_utf8")
ConfigError = options_lib.ConfigError


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


def _matched_files(flag: str, pattern: str, source: str) -> set[str]:
  """The files a --input/--validation_input pattern matches (local ones by their real path);
  ConfigError if it cannot be read."""
  if source == "tfds":
    if not FileSystems.exists(pattern):
      raise ConfigError(f"--{flag}={pattern}: no such TFDS data_dir")
    return {os.path.realpath(pattern) if "://" not in pattern else pattern}
  if "://" not in pattern and os.path.isdir(pattern):
    raise ConfigError(f"--{flag}={pattern} is a directory; give a file pattern such as "
                      f"{posixpath.join(pattern, '*.json.gz')}")
  if "://" not in pattern:
    broken = sorted(p for p in glob.glob(pattern, recursive=True)
                    if os.path.islink(p) and not os.path.exists(p))
    if broken:
      raise ConfigError(f"--{flag}={pattern} matches a broken symbolic link: {broken[0]}")
  try:
    sources.check_pattern_matches(pattern)
  except sources.NoFilesMatchedError as e:
    raise ConfigError(f"--{flag}: {e}") from None
  files = {m.path for m in FileSystems.match([pattern])[0].metadata_list}
  directories = sorted(f for f in files if "://" not in f and os.path.isdir(f))
  if directories and len(directories) == len(files):
    raise ConfigError(f"--{flag}={pattern} matches only directories ({directories[0]}, ...)")
  return {os.path.realpath(f) if "://" not in f else f for f in files}


def _check_paths(opts) -> None:
  """--output_dir and --artifact_cache_dir must be directories we can name exactly."""
  out = opts.output_dir
  if not out or not out.strip():
    raise ConfigError("--output_dir is empty; give a directory")
  if out.startswith("file://"):
    raise ConfigError(f"--output_dir={out}: give a local path without file:// (Beam's "
                      "filesystems know no file:// scheme)")
  if any(c in out for c in "*?[]"):
    raise ConfigError(f"--output_dir={out} holds a glob character (* ? [ ]); Beam would read it "
                      "as a pattern: pick a name without them")
  cache = artifacts_lib.artifacts_dir(opts)
  if "://" not in cache and os.path.exists(cache) and not os.path.isdir(cache):
    raise ConfigError(f"--artifact_cache_dir={cache} is a file, not a directory")
  if posixpath.normpath(cache) == posixpath.normpath(out):
    raise ConfigError("--artifact_cache_dir is --output_dir itself: give it a subdirectory "
                      "(the default is <output_dir>/artifacts) or another place")


def glob_regex(pattern: str) -> "re.Pattern":
  """A file glob as Beam's filesystems read it: '**' crosses '/', '*' and '?' do not."""
  out, i = [], 0
  while i < len(pattern):
    if pattern.startswith("**", i):
      out.append(".*")
      i += 2
    elif pattern[i] == "*":
      out.append("[^/]*")
      i += 1
    elif pattern[i] == "?":
      out.append("[^/]")
      i += 1
    elif pattern[i] == "[" and "]" in pattern[i + 2:]:
      end = pattern.index("]", i + 2)
      body = pattern[i + 1:end]
      out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
      i = end + 1
    else:
      out.append(re.escape(pattern[i]))
      i += 1
  return re.compile("".join(out))


# Files a run puts in its output directory, to test input patterns against before they exist.
_OUTPUT_EXAMPLES = (".lock", ".staging-x/IN_PROGRESS.json", "artifacts/static_unigram-x.json",
                    "bytes/train/data-00000-of-00004.tfrecord", "x/train/data.json.gz",
                    "manifest.json", "stats.json", "dead_letters/part-00000-of-00004.jsonl",
                    "x.json", "x.txt",
                    "x.jsonl", "x.gz")


def _refuse_input_inside_output(opts, files: set[str]) -> None:
  """The job must never read its own output (or lock, staging, artifacts) as input: neither
  files matched now nor files a run will write there."""
  patterns = [p for p in (opts.input, opts.validation_input) if p]
  out = opts.output_dir.rstrip("/") if "://" in opts.output_dir else os.path.abspath(
      opts.output_dir)
  for pattern in patterns:
    full = glob_regex(pattern if "://" in pattern else os.path.abspath(pattern))
    for example in _OUTPUT_EXAMPLES:
      if full.fullmatch(posixpath.join(out, example)):
        raise ConfigError(f"--input pattern {pattern} would match files the job writes in "
                          f"--output_dir={opts.output_dir} (e.g. {example}): the job would "
                          "read its own output as input. Narrow the pattern or write elsewhere")
  if "://" in opts.output_dir:
    inside = sorted(f for f in files if f.startswith(opts.output_dir.rstrip("/") + "/"))
  else:
    root = os.path.realpath(opts.output_dir) + os.sep
    inside = sorted(f for f in files if "://" not in f and f.startswith(root))
  if inside:
    raise ConfigError(f"the input patterns match {inside[0]}, inside --output_dir="
                      f"{opts.output_dir}: the job would read its own output as input. Narrow "
                      "the pattern or write elsewhere")


def _check_artifact_files(opts, specs) -> None:
  """A given --static_unigram / --spm_model must load, and fit the methods; else ConfigError."""
  if opts.static_unigram:
    from neural_compression.methods import static_unigram
    try:
      static_unigram.StaticUnigramModel.from_json(
          artifacts_lib.read_bytes(opts.static_unigram).decode("utf-8"))
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise ConfigError(f"--static_unigram={opts.static_unigram}: not a static unigram "
                        f"artifact ({type(e).__name__}: {e})") from None
  if opts.spm_model:
    from neural_compression.methods import sentencepiece as spc
    try:
      # The model loads lazily: ask its size here, so a bad file fails now.
      pieces = spc.SentencePieceCompressor(artifacts_lib.read_bytes(opts.spm_model)).vocab_size
    except Exception as e:  # pylint: disable=broad-except  (protobuf DecodeError, OSError & co.)
      raise ConfigError(f"--spm_model={opts.spm_model}: not a SentencePiece model "
                        f"({type(e).__name__}: {e})") from None
    for spec in specs:
      if spec.kind == "spm" and pieces != spec.spm_vocab_size:
        raise ConfigError(f"--spm_model={opts.spm_model} has {pieces} pieces, "
                          f"but --methods asks for {spec.name}")


def validate(opts) -> list[methods.MethodSpec]:
  """Checks flags, inputs, artifacts and the output directory, writing nothing; returns the
  parsed methods. Everything that can be checked before the job is checked here."""
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
               "m2_length", "shuffle_buffer_bytes"):
    if getattr(opts, flag) < 1:
      raise ConfigError(f"--{flag} must be >= 1, got {getattr(opts, flag)}")
  if opts.examples_per_run < 0:
    raise ConfigError("--examples_per_run must be >= 0 (0 keeps every example)")
  if not 0 <= opts.validation_percent <= 100:
    raise ConfigError("--validation_percent must be in [0, 100]")
  if opts.spm_train_bytes < 1:
    raise ConfigError(f"--spm_train_bytes must be >= 1, got {opts.spm_train_bytes}")
  if len({s.spm_vocab_size for s in specs if s.kind == "spm"}) > 1:
    raise ConfigError("--methods: one run trains one SentencePiece model: list one spm:v<K>")
  if opts.source != "default" and not opts.input:
    raise ConfigError(f"--source={opts.source} needs --input (a file pattern or TFDS data_dir)")
  if opts.source == "default" and (opts.input or opts.validation_input):
    raise ConfigError("--source=default reads the embedded corpus: drop --input/--validation_input")
  _check_paths(opts)
  if opts.source != "default":
    train = _matched_files("input", opts.input, opts.source)
    validation = set()
    if opts.validation_input:
      if opts.validation_input == opts.input and opts.source != "tfds":
        raise ConfigError("--validation_input is the same pattern as --input: the validation "
                          "documents would also be training data")
      validation = _matched_files("validation_input", opts.validation_input, opts.source)
      shared_files = train & validation
      if shared_files and opts.source != "tfds":
        raise ConfigError(f"--input and --validation_input both match {sorted(shared_files)[0]}"
                          f"{' and others' if len(shared_files) > 1 else ''}: validation "
                          "documents would leak into the training data")
    if opts.source != "tfds":
      _refuse_input_inside_output(opts, train | validation)
  _check_artifact_files(opts, specs)
  if any(s.uses_m1 for s in specs):
    from neural_compression.m1 import engine as exact_engine
    try:
      exact_engine.verify_checkpoint(compress.local_copy(opts.m1_checkpoint))
    except (OSError, ValueError) as e:
      raise ConfigError(f"--m1_checkpoint={opts.m1_checkpoint}: {e}") from None
  check_output_dir(inspect_output_dir(opts), opts)
  return specs


def inspect_output_dir(opts) -> output_dir_lib.OutputState:
  return output_dir_lib.inspect(opts.output_dir, artifacts_lib.artifacts_dir(opts))


def check_output_dir(state: output_dir_lib.OutputState, opts) -> None:
  """ConfigError unless this job may write `state`'s directory (read-only checks)."""
  output_dir_lib.refuse_foreign(state)
  old = state.manifest
  new = content_flags(opts)
  # A flag an older manifest does not record had its default then.
  defaults = PipelineOptions([]).view_as(options_lib.CompressionOptions)
  old_flags = {k: (old or {}).get("flags", {}).get(k, getattr(defaults, k)) for k in CONTENT_FLAGS}
  if old and old_flags != new and not opts.overwrite:
    changed = sorted(k for k in CONTENT_FLAGS if old_flags[k] != new[k])
    raise ConfigError(f"--output_dir={opts.output_dir} holds a different run (flags differ: "
                      f"{', '.join(changed)}); pass --overwrite to replace it or pick another "
                      "--output_dir")


def _read(p, opts, pattern, label, split):
  return sources.read_documents(p, opts.source, pattern, with_dead_letters=True, label=label,
                                utf8_text=True, document_blocks=True,
                                **artifacts_lib.sources_options(opts, split))


def read_examples(p, opts, grouping: grouping_lib.GroupSorted | None = None):
  """Reads the documents of the run's source and cuts them into examples; `grouping` gathers
  each run bucket's documents (default: Beam's GroupByKey).

  Returns (PCollection[(example_id, symbols)], dead letters). Shared with beam_pipeline.verify,
  which rebuilds a run's source examples the same way.
  """
  make_examples = lambda fixed: runs.DocumentsToExamples(
      opts.docs_per_run, opts.example_bytes, opts.examples_per_run, opts.run_buckets,
      opts.validation_percent, fixed, grouping)
  docs, dead = _read(p, opts, opts.input, "ReadDocuments", "train")
  if not opts.validation_input:
    return docs | "Examples" >> make_examples(None), dead
  val_docs, val_dead = _read(p, opts, opts.validation_input, "ReadValidation", "validation")
  examples = ((docs | "TrainExamples" >> make_examples("train"),
               val_docs | "ValidationExamples" >> make_examples("validation"))
              | "AllExamples" >> beam.Flatten())
  return examples, (dead, val_dead) | "AllDeadLetters" >> beam.Flatten()


def spill_dir(out_dir: str) -> str:
  """Where --shuffle=files writes its spill files: inside the run's staging directory."""
  return posixpath.join(out_dir, grouping_lib.SPILL_DIR)


def shuffle_of(pipeline_options, opts) -> str:
  """--shuffle with 'auto' resolved for the runner these options pick."""
  return grouping_lib.resolve_shuffle(opts.shuffle,
                                      pipeline_options.view_as(StandardOptions).runner,
                                      pipeline_options.view_as(PortableOptions).job_endpoint)


def build(p, opts, specs, artifacts: compress.Artifacts, out_dir: str, shuffle: str = "beam"):
  """Adds the job's stages to pipeline `p`, writing the run into `out_dir` (its staging dir);
  `shuffle` ('beam' or 'files') is how documents and records are grouped."""
  grouping = grouping_lib.GroupSorted(shuffle, spill_dir(out_dir), opts.shuffle_buffer_bytes)
  examples, dead = read_examples(p, opts, grouping)
  records, stats = examples | "CompressExamples" >> compress.CompressExamples(
      specs, artifacts, opts.m2_length, opts.m2_mode, opts.batch_size,
      opts.fail_once_for_testing)
  files = records | "WriteRecords" >> write.WriteShardedRecords(out_dir, opts.num_shards,
                                                                grouping)
  bits_per_token = {s.slug: _bits_per_token(s, artifacts) for s in specs}
  _ = stats | "WriteStats" >> write.WriteStats(out_dir, bits_per_token, layout.STATS)
  _ = files | "WriteFileList" >> write.WriteFileList(out_dir, FILE_LIST)
  _ = dead | "WriteDeadLetters" >> _WriteDeadLetters(out_dir, grouping)


def _bits_per_token(spec, artifacts) -> float:
  """A method's bits per token without loading M1 (its tokens carry N bits each)."""
  if spec.kind in ("bytes", "spm"):
    return methods.build_compressor(spec, spm_model_proto=artifacts.spm_model_proto).bits_per_token
  return float(spec.token_bits)


# Dead-letter shards hold about this many bytes each (their count follows the dead letters' total,
# not --num_shards, which is sized for records): a wrong flag that rejects a whole corpus still
# never puts more than a shard's worth in one worker's memory.
DEAD_LETTER_SHARD_BYTES = 64 << 20


class _WriteDeadLetters(beam.PTransform):
  """Writes every dead letter (file, line, reason, base64 raw bytes) as JSON lines in shards
  `dead_letters/part-SSSSS-of-NNNNN.jsonl` by hash of the line, each shard's lines sorted: the
  bytes depend only on the dead letters (N = their total bytes / DEAD_LETTER_SHARD_BYTES,
  rounded up). Only shards with lines are written."""

  def __init__(self, out_dir: str, grouping: grouping_lib.GroupSorted):
    super().__init__()
    self._out_dir = out_dir
    self._grouping = grouping

  def expand(self, dead):
    out_dir, part_bytes = self._out_dir, DEAD_LETTER_SHARD_BYTES

    def to_line(d):
      return json.dumps({**d, "raw": base64.b64encode(d["raw"]).decode()}, sort_keys=True)

    def write_part(kv, num_shards):
      shard, lines = kv  # sorted (GroupSorted)
      count = 0
      with output_dir_lib.atomic_writer(
          posixpath.join(out_dir, rm.dead_letter_part(shard, num_shards))) as f:
        for line, _ in lines:
          f.write(line.encode() + b"\n")
          count += 1
      return count

    lines = dead | "ToJsonLines" >> beam.Map(to_line)
    num_shards = beam.pvalue.AsSingleton(
        lines | "LineBytes" >> beam.Map(lambda line: len(line) + 1)
        | "TotalBytes" >> beam.CombineGlobally(sum)
        | "ShardCount" >> beam.Map(lambda total: max(1, -(-total // part_bytes))))
    return (lines
            | "KeyByShard" >> beam.Map(lambda line, n: (write.shard_of(line, n), (line, b"")),
                                       n=num_shards)
            | "GroupShards" >> self._grouping
            | "WritePart" >> beam.Map(write_part, num_shards=num_shards))


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


def parse_flags(argv: list[str] | None):
  """argv -> (PipelineOptions, CompressionOptions); ConfigError for unknown or bad flags."""
  try:
    argv = options_lib.expand_runner_config(list(argv or []))
  except (OSError, ValueError, yaml.YAMLError) as e:
    raise ConfigError(str(e)) from e
  options_lib.check_known_flags(argv)
  pipeline_options = PipelineOptions(argv)
  return pipeline_options, pipeline_options.view_as(options_lib.CompressionOptions)


def _dead_letter_parts(out_dir: str) -> list[str]:
  """Run-relative paths of the dead-letter shards written into `out_dir`, sorted."""
  pattern = posixpath.join(out_dir, rm.DEAD_LETTERS_DIR, "part-*.jsonl")
  return sorted(rm.relative_path(out_dir, m.path)
                for m in FileSystems.match([pattern])[0].metadata_list)


def _file_entry(out_dir: str, name: str) -> dict:
  data = artifacts_lib.read_bytes(posixpath.join(out_dir, name))
  return {"path": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def run(argv: list[str] | None = None) -> dict:
  """Runs the job; returns the manifest. Raises ConfigError before touching anything on bad
  flags, inputs, artifacts or output directory (see beam_pipeline/output_dir.py for the rest)."""
  pipeline_options, opts = parse_flags(argv)
  specs = validate(opts)
  run_id = rm.new_run_id()
  with output_dir_lib.locked(opts.output_dir, run_id, opts.break_lock):
    # Again under the lock: another job may have finished meanwhile.
    state = output_dir_lib.inspect_finishing_switch(opts.output_dir,
                                                    artifacts_lib.artifacts_dir(opts))
    check_output_dir(state, opts)
    output_dir_lib.remove_stale_staging(state)
    staging = output_dir_lib.create_staging(opts.output_dir, run_id, content_flags(opts))
    try:
      manifest = _run_into(staging, run_id, pipeline_options, opts, specs)
    except BaseException:
      output_dir_lib.remove_staging(staging)  # the previous run was never touched
      raise
    # Not inside the try: once the switch has begun, the staged run is the only complete copy,
    # and a failure leaves its journal for the next job to finish.
    output_dir_lib.switch_over(opts.output_dir, staging, state.manifest, state.verify_report)
  manifest["output_dir"] = opts.output_dir if "://" in opts.output_dir else posixpath.abspath(
      opts.output_dir)
  return manifest


def _run_into(staging: str, run_id: str, pipeline_options, opts, specs) -> dict:
  """Runs the pipeline into `staging` and writes its manifest there; returns it (with stats)."""
  started = time.time()
  prepared = artifacts_lib.prepare(opts, pipeline_options, specs, run_id)
  uses_m1 = any(s.uses_m1 for s in specs)
  m1_context = None
  if uses_m1:  # fixed here and recorded, so that every worker and every reader uses the same
    from neural_compression.m1 import engine as exact_engine
    m1_context = exact_engine.context_length(compress.local_copy(opts.m1_checkpoint))
  artifacts = compress.Artifacts(
      m1_checkpoint=opts.m1_checkpoint if uses_m1 else None,
      m1_context=m1_context,
      static_unigram_json=prepared["static_unigram_json"],
      spm_model_proto=prepared["spm_model_proto"],
      m1_cache_bytes=getattr(opts, "m1_cache_bytes", None))
  p = beam.Pipeline(options=pipeline_options)
  build(p, opts, specs, artifacts, staging, shuffle_of(pipeline_options, opts))
  # The local runners work in this process: its long-lived objects need no more collecting.
  compress.freeze_loaded_objects()
  result = p.run()
  result.wait_until_finish()
  # No longer needed: free the disk before the switch. Not behind FileSystems.exists(dir): on an
  # object store a directory is a prefix, never an object, and exists() says False.
  output_dir_lib.remove_tree(spill_dir(staging))
  files = json.loads(artifacts_lib.read_bytes(posixpath.join(staging, FILE_LIST)))
  stats = json.loads(artifacts_lib.read_bytes(posixpath.join(staging, layout.STATS)))
  counters = _counters(result)
  checks = accounting(counters, stats)
  broken = {k: v for k, v in checks.items() if not v["ok"]}
  if broken:
    raise AccountingError(f"the run's counters do not add up; the run was not switched in and "
                          f"any previous run is untouched: {broken}")
  FileSystems.delete([posixpath.join(staging, FILE_LIST)])
  manifest = {
      "format": rm.FORMAT,
      "version": rm.VERSION,
      "run_id": run_id,
      "flags": content_flags(opts),
      "methods": [s.name for s in specs],
      "m1_checkpoint": opts.m1_checkpoint if uses_m1 else None,
      "m1_checksum": directory_checksum(opts.m1_checkpoint) if uses_m1 else None,
      "m1_context": m1_context,
      "static_unigram_sha256": (hashlib.sha256(prepared["static_unigram_json"].encode()).hexdigest()
                                if prepared["static_unigram_json"] else None),
      "spm_model_sha256": (hashlib.sha256(prepared["spm_model_proto"]).hexdigest()
                           if prepared["spm_model_proto"] else None),
      "artifacts": prepared["provenance"],
      "files": files,
      "run_files": [_file_entry(staging, name)
                    for name in [layout.STATS] + _dead_letter_parts(staging)],
      "records": {f"{s}/{split}": sum(f["records"] for f in files
                                      if f["method"] == s and f["split"] == split)
                  for s in stats for split in stats[s]},
      "counters": counters,
      "accounting": checks,
      "wall_seconds": round(time.time() - started, 1),
      "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
  }
  # The staged run is complete once its manifest exists; the switch-over moves it in place.
  output_dir_lib.write_file(posixpath.join(staging, layout.MANIFEST),
                            json.dumps(manifest, indent=1, sort_keys=True).encode())
  manifest["stats"] = stats
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
