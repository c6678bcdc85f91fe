"""Beam job overhead: the DirectRunner job against the bare engine on the same examples, one run.

  python benchmarks/pipeline_benchmark.py [--examples_per_run 40] [--methods equal_info_ac:b16:v65k]

Runs the job (in-process DirectRunner, default corpus) into a temporary directory, rebuilds the
exact examples it compressed with the job's own stages, then times the bare compressors on them
(same batch size) in a fresh process, from loading M1 (engine import, checkpoint, compiled
kernels) to the last example: what a worker must pay whatever runs it. Prints both throughputs
and the job's overhead. The job's time covers reading, runs, loading M1, compression,
serialization and writing; Beam's start-up is part of it, so use enough examples for the figure
to mean something at scale (--examples_per_run 0: the whole default corpus).
"""
from __future__ import annotations

import argparse
import pickle
import subprocess
import sys
import tempfile
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipeline import options as options_lib
from beam_pipeline import pipeline


# The bare engine in a fresh process: load what a worker loads, encode, print the seconds.
BARE = """
import pickle, sys, time
path, method_list, checkpoint, context, batch = sys.argv[1:]
data = [x for _, x in pickle.loads(open(path, "rb").read())]
start = time.perf_counter()
from neural_compression import methods
from neural_compression.m1 import engine
specs = methods.parse_methods(method_list)
m1 = engine.load_exact_model(checkpoint, max_context=int(context) or None) if any(
    s.uses_m1 for s in specs) else None
for spec in specs:
  compressor = methods.build_compressor(spec, m1_model=m1)
  for i in range(0, len(data), int(batch)):
    compressor.encode_batch(data[i:i + int(batch)])
print(time.perf_counter() - start)
"""


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
  if manifest.get("static_unigram_sha256") or manifest.get("spm_model_sha256"):
    raise SystemExit("pick methods without estimated artifacts (M1 methods, gzip, bytes)")
  out = subprocess.run(
      [sys.executable, "-c", BARE, dump, args.methods, opts.m1_checkpoint,
       str(manifest.get("m1_context") or 0), str(args.batch_size)],
      check=True, capture_output=True, text=True)
  bare_seconds = float(out.stdout.strip().splitlines()[-1])
  print(f"{nbytes:,} bytes in {len(data)} examples, methods {args.methods}")
  print(f"job (DirectRunner, everything included): {job_seconds:.1f} s, "
        f"{nbytes / job_seconds:,.0f} bytes/s")
  print(f"bare compressors on the same examples, fresh process, M1 load included: "
        f"{bare_seconds:.1f} s, "
        f"{nbytes / bare_seconds:,.0f} bytes/s")
  print(f"job overhead: {100 * (job_seconds / bare_seconds - 1):+.1f}%")


if __name__ == "__main__":
  main()
