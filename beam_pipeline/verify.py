"""`python -m beam_pipeline.verify --output_dir=DIR [--sample_percent=P]`: decode a run's records
back to text and compare them with the source, reporting mismatches by record.

It rebuilds the source examples with the run's own flags (from its manifest), joins them with
the records by example id, decodes each record's tokens with its method (`decode_prefix`: a
trimmed record decodes to the first `raw_bytes` symbols of its example) and compares bytes.
Exits 1 if any record mismatches; writes <output_dir>/verify.json.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import posixpath
import sys

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipeline import artifacts as artifacts_lib
from beam_pipeline import compress
from beam_pipeline import options as options_lib
from beam_pipeline import pipeline
from beam_pipeline import write
from neural_compression import methods
from neural_compression import output_layout as layout

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

  def __init__(self, specs, artifacts, shared_handle, mode):
    self._specs = specs
    self._artifacts = artifacts
    self._shared = shared_handle
    self._mode = mode

  def setup(self):
    self._compressors = self._shared.acquire(
        lambda: compress._Compressors(self._specs, self._artifacts))  # pylint: disable=protected-access

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


def run(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--output_dir", required=True)
  parser.add_argument("--sample_percent", type=int, default=100,
                      help="verify examples whose id hashes below this percentage")
  parser.add_argument("--methods", default=None, help="only these methods (default: all)")
  known, beam_args = parser.parse_known_args(argv)
  manifest = json.loads(artifacts_lib.read_bytes(posixpath.join(known.output_dir, layout.MANIFEST)))
  flags = manifest["flags"]
  pipeline_options = PipelineOptions(beam_args)
  opts = pipeline_options.view_as(options_lib.CompressionOptions)
  for k, v in flags.items():
    setattr(opts, k, v)
  opts.output_dir = known.output_dir
  specs = methods.parse_methods(known.methods or flags["methods"])
  prepared = artifacts_lib.prepare(opts, pipeline_options, specs)
  m1 = beam_args_m1(beam_args, manifest)
  artifacts = compress.Artifacts(m1_checkpoint=m1, **prepared)
  from apache_beam.utils import shared
  percent = known.sample_percent
  with beam.Pipeline(options=pipeline_options) as p:
    examples, _ = pipeline.read_examples(p, opts)
    groups = {"source": examples | "SampleSource" >> beam.Filter(
        lambda kv: _sampled(kv[0], percent))}
    for spec in specs:
      pattern = posixpath.join(known.output_dir, spec.slug, "*", "data-*.tfrecord")
      groups[spec.slug] = (
          p | f"Read_{spec.slug}" >> beam.io.ReadFromTFRecord(pattern)
          | f"Parse_{spec.slug}" >> beam.Map(parse_record)
          | f"Sample_{spec.slug}" >> beam.Filter(lambda r: _sampled(r["example_id"], percent))
          | f"Key_{spec.slug}" >> beam.Map(lambda r: (r["example_id"], r)))
    problems = (groups | "Join" >> beam.CoGroupByKey()
                | "Check" >> beam.ParDo(_CheckExampleFn(specs, artifacts, shared.Shared(),
                                                        opts.m2_mode)))
    report_path = posixpath.join(known.output_dir, "verify.json")
    _ = (problems | beam.combiners.ToList()
         | beam.Map(lambda items: write.write_atomically(
             report_path, json.dumps(sorted(items, key=lambda i: (i["method"], i["example_id"])),
                                     indent=1).encode())))
    result = p.run()
  counters = {f"{c.key.metric.name}": c.committed
              for c in result.metrics().query()["counters"]
              if c.key.metric.namespace == VERIFY_NAMESPACE}
  report = json.loads(artifacts_lib.read_bytes(report_path))
  return {"counters": dict(sorted(counters.items())), "mismatches": report}


def beam_args_m1(beam_args, manifest) -> str | None:
  if not any(methods.parse_method(m).uses_m1 for m in manifest["methods"]):
    return None
  for arg in beam_args:
    if arg.startswith("--m1_checkpoint="):
      return arg.split("=", 1)[1]
  return options_lib.DEFAULT_M1_CHECKPOINT


def main() -> int:
  logging.basicConfig(level=logging.INFO)
  logging.getLogger("apache_beam").setLevel(logging.WARNING)
  out = run(sys.argv[1:])
  for name, value in out["counters"].items():
    print(f"{name:60s} {value:>10,}")
  for m in out["mismatches"][:50]:
    print(f"MISMATCH {m['method']} {m['example_id']}: {m['reason']}")
  print(f"{len(out['mismatches'])} mismatching examples")
  return 1 if out["mismatches"] else 0


if __name__ == "__main__":
  sys.exit(main())
