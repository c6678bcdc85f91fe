"""Beam job overhead: the DirectRunner job against the bare engine on the same examples, one run.

  python benchmarks/pipeline_benchmark.py [--examples_per_run 40] [--methods equal_info_ac:b16:v65k]

Runs the job (in-process DirectRunner, default corpus) into a temporary directory, rebuilds the
exact examples it compressed with the job's own stages, then times the bare compressors on them
(same batch size). Prints both throughputs and the job's overhead. The job's time covers reading,
runs, compression, serialization and writing; Beam's start-up is part of it, so use enough
examples for the figure to mean something at scale.
"""
from __future__ import annotations

import argparse
import pickle
import tempfile
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipeline import compress
from beam_pipeline import options as options_lib
from beam_pipeline import pipeline
from neural_compression import methods


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--examples_per_run", type=int, default=40)
  parser.add_argument("--methods", default="equal_info_ac:b16:v65k")
  parser.add_argument("--batch_size", type=int, default=256)
  args = parser.parse_args()
  out = tempfile.mkdtemp(prefix="pipeline_bench_")
  flags = [f"--output_dir={out}/run", f"--methods={args.methods}",
           f"--examples_per_run={args.examples_per_run}", f"--batch_size={args.batch_size}"]
  start = time.perf_counter()
  manifest = pipeline.run(flags)
  job_seconds = time.perf_counter() - start
  nbytes = manifest["counters"]["runs/bytes_in_examples"]
  # The same examples, rebuilt by the job's own stages (not timed).
  opts = PipelineOptions(flags).view_as(options_lib.CompressionOptions)
  dump = f"{out}/examples.pkl"
  with beam.Pipeline(options=PipelineOptions(flags)) as p:
    examples, _ = pipeline.read_examples(p, opts)
    _ = (examples | beam.combiners.ToList()
         | beam.Map(lambda items: open(dump, "wb").write(pickle.dumps(sorted(items, key=lambda kv: kv[0])))))
  data = [x for _, x in pickle.loads(open(dump, "rb").read())]
  specs = methods.parse_methods(args.methods)
  compressors = compress.Compressors(specs, compress.Artifacts(
      m1_checkpoint=opts.m1_checkpoint))
  start = time.perf_counter()
  for _, compressor in compressors.by_slug.values():
    for i in range(0, len(data), args.batch_size):
      compressor.encode_batch(data[i:i + args.batch_size])
  bare_seconds = time.perf_counter() - start
  print(f"{nbytes:,} bytes in {len(data)} examples, methods {args.methods}")
  print(f"job (DirectRunner, everything included): {job_seconds:.1f} s, "
        f"{nbytes / job_seconds:,.0f} bytes/s")
  print(f"bare compressors on the same examples:   {bare_seconds:.1f} s, "
        f"{nbytes / bare_seconds:,.0f} bytes/s")
  print(f"job overhead: {100 * (job_seconds / bare_seconds - 1):+.1f}%")


if __name__ == "__main__":
  main()
