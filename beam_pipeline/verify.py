"""`python -m beam_pipeline.verify --output_dir=DIR [--sample_percent=P]`: decode a run's records
back to text and compare them with the source, reporting mismatches by record.

It rebuilds the source examples with the run's own flags (from its manifest), joins them with
the records by example id, decodes each record's tokens with its method (`decode_prefix`: a
trimmed record decodes to the first `raw_bytes` symbols of its example) and compares bytes.
Before decoding, every file the manifest lists is checked (size, sha256, record count); a bad
file is reported by name and its records are not decoded. The run's own M1 checkpoint and
artifacts (recorded in the manifest) are used, checked by their checksums. Exits 1 if any file
or record is bad, 2 (one `error:` line) if the run cannot be verified; writes
<output_dir>/verify.json.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import posixpath
import sys

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipeline import artifacts as artifacts_lib
from beam_pipeline import compress
from beam_pipeline import options as options_lib
from beam_pipeline import output_dir as output_dir_lib
from beam_pipeline import pipeline
from beam_pipeline import sources
from beam_pipeline.options import ConfigError
from neural_compression import methods
from neural_compression import output_layout as layout
from neural_compression import run_manifest as rm

VERIFY_NAMESPACE = "verify"


def parse_record(data: bytes) -> dict:
  import tensorflow as tf
  example = tf.train.Example.FromString(data)
  f = example.features.feature
  return {"tokens": np.asarray(f[layout.TARGETS].int64_list.value, np.int64),
          "raw_bytes": int(f[layout.RAW_BYTES].int64_list.value[0]),
          "example_id": f[layout.EXAMPLE_ID].bytes_list.value[0].decode(),
          "chunk": int(f[layout.CHUNK].int64_list.value[0])}


def _sampled(example_id: str, percent: int) -> bool:
  return int(hashlib.sha256(example_id.encode()).hexdigest()[:8], 16) % 100 < percent


class _CheckExampleFn(beam.DoFn):
  """(example_id, {'source': [symbols], slug: [records...]}) -> mismatch reports."""

  def __init__(self, handler: compress.CompressionHandler, mode: str, damaged: set[str]):
    self._handler = handler
    self._mode = mode
    # Records of shards that failed their check are not read; for those methods an example
    # without records is counted as unread, not reported again (the file problem names it).
    self._damaged = set(damaged)

  def setup(self):
    self._compressors = self._handler.load()

  def process(self, keyed):
    example_id, groups = keyed
    sources_ = groups["source"]
    for slug, (spec, compressor) in self._compressors.by_slug.items():
      records = sorted(groups[slug], key=lambda r: r["chunk"])
      counter = lambda name: beam.metrics.Metrics.counter(VERIFY_NAMESPACE, f"{slug}/{name}")
      if len(sources_) != 1:
        counter("missing_source").inc(len(records))
        yield {"method": slug, "example_id": example_id, "reason": "no source example"}
        continue
      source = sources_[0]
      if not records:
        if slug in self._damaged:
          counter("unread_records").inc()
          continue
        counter("missing_records").inc()
        yield {"method": slug, "example_id": example_id, "reason": "no records"}
        continue
      reason = self._check(spec, compressor, source, records)
      if reason:
        counter("mismatched_records").inc(len(records))
        yield {"method": slug, "example_id": example_id, "reason": reason}
      else:
        counter("verified_records").inc(len(records))
        counter("verified_bytes").inc(sum(r["raw_bytes"] for r in records))

  def _check(self, spec, compressor, source, records) -> str | None:
    try:
      if self._mode == "trim" or spec.is_windowed:
        start = 0
        for r in records:  # windowed pieces decode on their own; trim has one piece
          decoded = compressor.decode_prefix(r["tokens"])
          expected = source[start:start + r["raw_bytes"]]
          if len(decoded) != r["raw_bytes"] or not np.array_equal(decoded, expected):
            return (f"chunk {r['chunk']}: decoded {len(decoded)} symbols, expected "
                    f"{r['raw_bytes']} matching the source from offset {start}")
          start += r["raw_bytes"]
        return None
      tokens = np.concatenate([r["tokens"] for r in records])
      decoded = compressor.decode(tokens)
      if not np.array_equal(decoded, source):
        return f"decoded {len(decoded)} symbols that differ from the {len(source)}-symbol source"
      return None
    except Exception as e:  # a corrupt record must be reported, not crash the check
      return f"decode failed: {type(e).__name__}: {e}"


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m beam_pipeline.verify",
                                   description=__doc__.splitlines()[0])
  parser.add_argument("--output_dir", required=True, help="the run to verify")
  parser.add_argument("--sample_percent", type=int, default=100,
                      help="verify examples whose id hashes below this percentage, 1..100 "
                           "(default: %(default)s); every file's sha256 is checked regardless")
  parser.add_argument("--methods", default=None, help="only these methods (default: all)")
  parser.add_argument("--m1_checkpoint", default=None,
                      help="M1 checkpoint (default: the one the run's manifest records; its "
                           "checksum must match the manifest's m1_checksum)")
  parser.add_argument("--break_lock", action="store_true",
                      help="remove a stale lock (--output_dir/.lock) left by a killed job")
  return parser


def _refuse_job_flags(argv: list[str], parser: argparse.ArgumentParser) -> None:
  """The job's own flags mean nothing to verify (it reads them from the manifest): an error,
  rather than a flag that is silently ignored."""
  job = options_lib.help_parser()
  ours = {o for a in parser._actions for o in a.option_strings}  # pylint: disable=protected-access
  job_flags = {o for a in job._actions for o in a.option_strings} - ours - {"-h", "--help"}  # pylint: disable=protected-access
  for arg in argv:
    name = arg.split("=", 1)[0]
    if name in job_flags:
      raise ConfigError(f"{name} is a flag of the job, not of verify: verify reads the run's "
                        "flags from its manifest (see python -m beam_pipeline.verify --help)")


def _read_manifest(output_dir: str) -> dict:
  path = posixpath.join(output_dir, layout.MANIFEST)
  if not FileSystems.exists(path):
    raise ConfigError(f"no complete run in --output_dir={output_dir}: {path} does not exist")
  try:
    return rm.relative_to(rm.parse_manifest(artifacts_lib.read_bytes(path), path), output_dir)
  except rm.ManifestError as e:
    raise ConfigError(str(e)) from None


def _m1_checkpoint(requested: str | None, manifest: dict) -> str | None:
  """The run's own M1 (or the one asked for), checked against the manifest's m1_checksum."""
  if not any(methods.parse_method(m).uses_m1 for m in manifest["methods"]):
    return None
  path = requested or manifest.get("m1_checkpoint") or options_lib.DEFAULT_M1_CHECKPOINT
  try:
    checksum = pipeline.directory_checksum(path)
  except OSError as e:
    raise ConfigError(f"M1 checkpoint {path}: {e}") from None
  if manifest.get("m1_checksum") and checksum != manifest["m1_checksum"]:
    raise ConfigError(f"M1 checkpoint {path} (checksum {checksum[:12]}...) is not the one that "
                      f"compressed this run (m1_checksum {manifest['m1_checksum'][:12]}...); "
                      "pass --m1_checkpoint=<that checkpoint>")
  return path


def _run_artifact(manifest: dict, name: str, sha_key: str, output_dir: str) -> bytes | None:
  """The bytes of an artifact the run used, from the file its manifest records (sha256-checked)."""
  want = manifest.get(sha_key)
  if not want:
    return None
  info = manifest.get("artifacts", {}).get(name, {})
  recorded = [p for p in (info.get("file"), info.get("given")) if p]
  if not recorded:
    return None
  # A relative path is relative to the run's directory; the cache's usual place is a fallback
  # for a run that was moved with its artifacts.
  candidates = [p if "://" in p or os.path.isabs(p) else posixpath.join(output_dir, p)
                for p in recorded]
  candidates.append(posixpath.join(output_dir, rm.ARTIFACTS_SUBDIR,
                                   posixpath.basename(recorded[0])))
  for path in candidates:
    try:
      data = artifacts_lib.read_bytes(path)
    except OSError:
      continue
    if hashlib.sha256(data).hexdigest() == want:
      return data
  raise ConfigError(f"no file with the run's {name} artifact (sha256 {want[:12]}...): looked at "
                    f"{', '.join(candidates)}")


def _artifacts(manifest, opts, pipeline_options, specs, m1) -> compress.Artifacts:
  unigram = _run_artifact(manifest, "static_unigram", "static_unigram_sha256", opts.output_dir)
  spm = _run_artifact(manifest, "spm", "spm_model_sha256", opts.output_dir)
  need_unigram = any(s.kind in methods.UNIGRAM_KINDS for s in specs)
  need_spm = any(s.kind == "spm" for s in specs)
  if (need_unigram and unigram is None) or (need_spm and spm is None):
    # A version-1 manifest records no artifact files: estimate them again, as the run did.
    prepared = artifacts_lib.prepare(opts, pipeline_options, specs, rm.new_run_id())
    unigram = unigram or (prepared["static_unigram_json"] or "").encode() or None
    spm = spm or prepared["spm_model_proto"]
  return compress.Artifacts(m1_checkpoint=m1, m1_context=rm.m1_context(manifest) if m1 else None,
                            static_unigram_json=unigram.decode() if unigram else None,
                            spm_model_proto=spm)


def _size_of(path: str) -> int | None:
  if "://" not in path:
    return os.path.getsize(path) if os.path.isfile(path) else None
  match = FileSystems.match([path])[0].metadata_list
  return match[0].size_in_bytes if match else None


class _ParseRecordsFn(beam.DoFn):
  """Serialized records -> parsed ones; an unparseable record is a problem, not a crash."""

  PROBLEM_TAG = "problem"

  def __init__(self, slug: str):
    self._slug = slug

  def process(self, data: bytes):
    try:
      yield parse_record(data)
    except Exception as e:  # pylint: disable=broad-except
      yield beam.pvalue.TaggedOutput(self.PROBLEM_TAG, {
          "method": self._slug, "example_id": "?",
          "reason": f"unparseable record: {type(e).__name__}: {e}"})


def run(argv=None) -> dict:
  """Verifies a run; returns {'counters', 'file_problems', 'mismatches'}. ConfigError on bad
  flags or a run that cannot be verified (named)."""
  parser = _parser()
  argv = list(argv or [])
  options_lib.check_known_flags(argv, extra=parser)
  _refuse_job_flags(argv, parser)
  known, beam_args = parser.parse_known_args(argv)
  if not 1 <= known.sample_percent <= 100:
    raise ConfigError(f"--sample_percent={known.sample_percent}: must be in 1..100 (a check "
                      "of 0% checks nothing)")
  manifest = _read_manifest(known.output_dir)
  flags = manifest["flags"]
  pipeline_options = PipelineOptions(beam_args)
  opts = pipeline_options.view_as(options_lib.CompressionOptions)
  for k, v in flags.items():
    if k in pipeline.CONTENT_FLAGS:  # a version-1 run's retired flags are left out
      setattr(opts, k, v)
  opts.output_dir = known.output_dir
  try:
    specs = methods.parse_methods(known.methods or flags["methods"])
  except methods.MethodError as e:
    raise ConfigError(f"--methods: {e}") from None
  missing = [s.name for s in specs if s.name not in manifest["methods"]]
  if missing:
    raise ConfigError(f"--methods: the run has no {', '.join(missing)} (its methods: "
                      f"{', '.join(manifest['methods'])})")
  with output_dir_lib.locked(known.output_dir, "verify-" + rm.new_run_id(), known.break_lock):
    try:
      return _verify(known, manifest, pipeline_options, opts, specs)
    except sources.NoFilesMatchedError as e:
      raise ConfigError(f"the run's source no longer matches ({e}); verify rebuilds the "
                        "examples from it: run verify where the run's --input resolves") from None


def _verify(known, manifest, pipeline_options, opts, specs) -> dict:
  output_dir = known.output_dir
  shards = [i for s in specs for i in rm.shard_infos(manifest, s.slug)]
  file_problems = rm.check_files(output_dir, shards + rm.run_file_infos(manifest), _size_of,
                                 FileSystems.open)
  bad = {line.split(": ", 1)[0] for line in file_problems}
  # Methods with a bad shard: their examples without records are covered by the file problem.
  damaged = {s.slug for s in specs for i in rm.shard_infos(manifest, s.slug)
             if posixpath.join(output_dir, i["path"]) in bad}
  m1 = _m1_checkpoint(known.m1_checkpoint, manifest)
  artifacts = _artifacts(manifest, opts, pipeline_options, specs, m1)
  handler = compress.CompressionHandler(specs, artifacts)
  percent = known.sample_percent
  with beam.Pipeline(options=pipeline_options) as p:
    examples, _ = pipeline.read_examples(p, opts)
    groups = {"source": examples | "SampleSource" >> beam.Filter(
        lambda kv: _sampled(kv[0], percent))}
    parse_problems = []
    for spec in specs:
      paths = [posixpath.join(output_dir, i["path"]) for i in rm.shard_infos(manifest, spec.slug)]
      paths = [path for path in paths if path not in bad]
      parsed = (p | f"Files_{spec.slug}" >> beam.Create(paths)
                | f"Read_{spec.slug}" >> beam.io.ReadAllFromTFRecord()
                | f"Parse_{spec.slug}" >> beam.ParDo(_ParseRecordsFn(spec.slug)).with_outputs(
                    _ParseRecordsFn.PROBLEM_TAG, main="records"))
      parse_problems.append(parsed[_ParseRecordsFn.PROBLEM_TAG])
      groups[spec.slug] = (
          parsed.records
          | f"Sample_{spec.slug}" >> beam.Filter(lambda r: _sampled(r["example_id"], percent))
          | f"Key_{spec.slug}" >> beam.Map(lambda r: (r["example_id"], r)))
    checked = (groups | "Join" >> beam.CoGroupByKey()
               | "Check" >> beam.ParDo(_CheckExampleFn(handler, opts.m2_mode, damaged)))
    problems = (parse_problems + [checked]) | "AllProblems" >> beam.Flatten()
    report_path = posixpath.join(output_dir, rm.VERIFY_REPORT)
    header = {"format": rm.VERIFY_FORMAT, "run_id": manifest.get("run_id"),
              "sample_percent": percent, "file_problems": file_problems}
    _ = (problems | beam.combiners.ToList()
         | beam.Map(lambda items: output_dir_lib.write_file(report_path, json.dumps(
             {**header, "mismatches": sorted(items, key=lambda i: (i["method"],
                                                                  i["example_id"]))},
             indent=1).encode())))
    result = p.run()
  counters = {f"{c.key.metric.name}": c.committed if c.committed is not None else c.attempted
              for c in result.metrics().query()["counters"]
              if c.key.metric.namespace == VERIFY_NAMESPACE}
  report = json.loads(artifacts_lib.read_bytes(report_path))
  return {"counters": dict(sorted(counters.items())), "file_problems": file_problems,
          "mismatches": report["mismatches"]}


def main(argv=None) -> int:
  from beam_pipeline import __main__ as job_main
  job_main.stop_on_sigterm()
  job_main.configure_logging()
  try:
    out = run(sys.argv[1:] if argv is None else argv)
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  for name, value in out["counters"].items():
    print(f"{name:60s} {value:>10,}")
  for line in out["file_problems"]:
    print(f"BAD FILE {line}")
  for m in out["mismatches"][:50]:
    print(f"MISMATCH {m['method']} {m['example_id']}: {m['reason']}")
  print(f"{len(out['file_problems'])} bad files, {len(out['mismatches'])} mismatching examples")
  return 1 if out["mismatches"] or out["file_problems"] else 0


if __name__ == "__main__":
  sys.exit(main())
