"""Beam job overhead: the DirectRunner job against the bare engine on the same examples, one run.

  python benchmarks/pipeline_benchmark.py [--examples_per_run 40] [--methods equal_info_ac:b16:v65k]
      [--against_examples_per_run 40] [--repeats 3]

Runs the job (`python -m beam_pipeline`, in-process DirectRunner, default corpus) into a
temporary directory, rebuilds the exact examples it compressed with the job's own stages, then
runs the bare compressors on them (same batch size): each in a fresh process, timed from the
process's start to its end (interpreter, imports, loading M1 and its compiled kernels included:
what a worker must pay whatever runs it; the bare process also unpickles its examples). Prints
both throughputs and the job's overhead. The job's time covers reading, runs, loading M1,
compression, serialization and writing; Beam's start-up is part of it, so use enough examples
for the figure to mean something at scale (--examples_per_run 0: the whole default corpus).
(Never two jobs in one process: the second finds the imports and compiled kernels loaded, and
ran up to 30% faster here.)

--against_examples_per_run K also runs both on the first K examples of every run (fewer bytes
of the same corpus) and prints the per-byte part of the overhead, from the differences
between the two, (job - job_K) / (bare - bare_K) - 1, in which every cost paid once per job
(start-up, imports, graph, checks, loading M1) cancels. At C4 scale only the per-byte part
remains. (A corpus repeated with new URLs would not do: its repeated
text hits the prefix cache.) --repeats R times each job and bare run R times, alternating, and
keeps the fastest of each: this machine's noise is of the order of a second. Every figure is
printed twice, in wall seconds and in CPU seconds (user + system of the process and all its
threads): CPU seconds are the cost on a shared machine and do not count the time a process
waited for a core that a neighbour held.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipeline import options as options_lib
from beam_pipeline import pipeline


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The bare engine in a fresh process: load what a worker loads, encode.
BARE = """
import pickle, sys
path, method_list, checkpoint, context, batch = sys.argv[1:]
data = [x for _, x in pickle.loads(open(path, "rb").read())]
from neural_compression import methods
from neural_compression.m1 import engine
specs = methods.parse_methods(method_list)
m1 = engine.load_exact_model(checkpoint, max_context=int(context) or None) if any(
    s.uses_m1 for s in specs) else None
for spec in specs:
  compressor = methods.build_compressor(spec, m1_model=m1)
  for i in range(0, len(data), int(batch)):
    compressor.encode_batch(data[i:i + int(batch)])
"""


def _timed_process(argv: list[str]) -> tuple[float, float]:
  """(wall seconds, CPU seconds) of a fresh Python process running `argv`. CPU seconds (user +
  system, all its threads) are what the work costs on a shared machine: they do not count the
  time the process waited for a core that a neighbour held, which wall time does."""
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  start = time.perf_counter()
  subprocess.run([sys.executable, *argv], check=True, capture_output=True, text=True, cwd=REPO)
  wall = time.perf_counter() - start
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def measure(flags: list[str], out_dir: str, work: str, methods: str, batch_size: int) -> dict:
  """Runs the job with `flags` into `out_dir`, then the bare compressors on the examples it
  compressed; returns the bytes compressed and both wall and CPU times (seconds)."""
  job_wall, job_cpu = _timed_process(["-m", "beam_pipeline", *flags])
  manifest = json.loads(open(f"{out_dir}/manifest.json").read())
  # The same examples, rebuilt by the job's own stages (not timed).
  opts = PipelineOptions(flags).view_as(options_lib.CompressionOptions)
  dump = f"{work}/examples.pkl"
  if not os.path.exists(dump):  # the same flags give the same examples
    with beam.Pipeline(options=PipelineOptions(flags)) as p:
      examples, _ = pipeline.read_examples(p, opts)
      _ = (examples | beam.combiners.ToList()
           | beam.Map(lambda items: open(dump, "wb").write(
               pickle.dumps(sorted(items, key=lambda kv: kv[0])))))
  if manifest.get("static_unigram_sha256") or manifest.get("spm_model_sha256"):
    raise SystemExit("pick methods without estimated artifacts (M1 methods, gzip, bytes)")
  bare_wall, bare_cpu = _timed_process(["-c", BARE, dump, methods, opts.m1_checkpoint,
                                        str(manifest.get("m1_context") or 0), str(batch_size)])
  return {"bytes": manifest["counters"]["runs/bytes_in_examples"], "job": job_wall,
          "bare": bare_wall, "job_cpu": job_cpu, "bare_cpu": bare_cpu}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--examples_per_run", type=int, default=40)
  parser.add_argument("--methods", default="equal_info_ac:b16:v65k")
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--repeats", type=int, default=1)
  parser.add_argument("--against_examples_per_run", type=int, default=0,
                      help="K > 0: also run on K examples per run, and split the overhead into "
                           "its fixed and per-byte parts")
  args = parser.parse_args()
  out = tempfile.mkdtemp(prefix="pipeline_bench_")
  settings = [args.examples_per_run] + ([args.against_examples_per_run]
                                        if args.against_examples_per_run else [])
  rows = []
  for examples_per_run in settings:
    work = f"{out}/{examples_per_run}"
    os.makedirs(work)
    flags = [f"--methods={args.methods}",
             f"--examples_per_run={examples_per_run}", f"--batch_size={args.batch_size}"]
    runs = [measure([*flags, f"--output_dir={work}/run{i}"], f"{work}/run{i}", work,
                    args.methods, args.batch_size) for i in range(args.repeats)]
    r = {"bytes": runs[0]["bytes"], "runs": runs}
    r.update({key: min(x[key] for x in runs) for key in ("job", "bare", "job_cpu", "bare_cpu")})
    rows.append(r)
    print(f"--examples_per_run {examples_per_run}: {r['bytes']:,} bytes, methods {args.methods}")
    print(f"  job (DirectRunner, everything included, best of {args.repeats}): {r['job']:.1f} s, "
          f"{r['bytes'] / r['job']:,.0f} bytes/s; {r['job_cpu']:.1f} CPU s")
    print(f"  bare compressors on the same examples, fresh process, M1 load included, best of "
          f"{args.repeats}: {r['bare']:.1f} s, {r['bytes'] / r['bare']:,.0f} bytes/s; "
          f"{r['bare_cpu']:.1f} CPU s")
    print(f"  job overhead: {100 * (r['job'] / r['bare'] - 1):+.1f}% wall, "
          f"{100 * (r['job_cpu'] / r['bare_cpu'] - 1):+.1f}% CPU (bound: at most +15%)",
          flush=True)
  if len(rows) == 2:
    big, small = rows
    for clock, job, bare in (("wall", "job", "bare"), ("CPU", "job_cpu", "bare_cpu")):
      per_byte = (big[job] - small[job]) / (big[bare] - small[bare]) - 1
      print(f"per-byte overhead, {clock} seconds (the {big['bytes'] - small['bytes']:,} bytes "
            f"between the two): {100 * per_byte:+.1f}% (bound: at most +15%); the job's extra "
            f"seconds: {small[job] - small[bare]:.1f} s at {small['bytes']:,} bytes, "
            f"{big[job] - big[bare]:.1f} s at {big['bytes']:,} bytes")
      # The same figure from each repeat's own four processes (run i at both sizes): its
      # spread says how far this machine's noise moves it.
      pairs = sorted((b[job] - s[job]) / (b[bare] - s[bare]) - 1
                     for b, s in zip(big["runs"], small["runs"]))
      print(f"  per repeat ({len(pairs)}): median {100 * pairs[len(pairs) // 2]:+.1f}%, from "
            f"{100 * pairs[0]:+.1f}% to {100 * pairs[-1]:+.1f}%")


if __name__ == "__main__":
  main()
