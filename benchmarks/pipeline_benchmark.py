"""Beam job overhead: the DirectRunner job against the bare engine on the same examples, one run.

  python benchmarks/pipeline_benchmark.py [--examples_per_run 40] [--methods equal_info_ac:b16:v65k]
      [--corpus_copies C [--doc_bytes N]] [--against_corpus_copies c | --against_examples_per_run K]
      [--repeats 3] [--keep_files]

Runs the job (`python -m beam_pipeline`, in-process DirectRunner) into a temporary directory,
rebuilds the exact examples it compressed with the job's own stages, then runs the bare
compressors on them (same batch size), each in a fresh process (never two jobs in one process:
the second finds the imports and compiled kernels loaded, and ran up to 30% faster here). Each
is timed twice: from outside, from the process's start to its end (interpreter, imports, loading
M1 and its compiled kernels: what a worker pays whatever runs it; the bare process also loads
its examples, from one .npz), and from inside, from after the imports (which vary by tenths of
a second between processes) to the end of the job or of the last example. Every figure is printed
in wall seconds and in CPU seconds (user + system, all threads): CPU seconds are the cost on a
shared machine and do not count the time a process waited for a core a neighbour held.

The input is the embedded default corpus (12 MB; --examples_per_run 0 compresses all of it) or,
with --corpus_copies C, C copies of it written as gzipped C4 JSON shards with distinct URLs (the
format users read; run buckets and shards scale with C; --doc_bytes N cuts its documents, 49
KB on average, at line ends into documents of about N bytes, as C4's ~2.2 KB, so that what the
job pays per document weighs as it will on C4). The job's whole overhead includes what it pays
once (Beam's import, building and checking the graph, the local runner's start) and what it
pays per byte (decompressing and parsing the input, grouping documents into runs and
records into shards, serializing and writing records). Beam's own floor is printed beside it: a
fresh process that imports Beam and runs a one-transform pipeline, which no job can beat.

The job also splits its own time (its clock, after the imports): the compressors (the bare
engine's work), loading them (which the bare run pays too) and everything else. These come from
one process, so a slow minute of this machine slows both parts alike: ratios of two processes
here move by +-30% from run to run, this split by a few percent.

A second setting separates what is paid once from what is paid per byte: per byte =
(job - job_2) / (bare - bare_2) - 1, in which every cost paid once per job cancels.
--against_corpus_copies c runs on a smaller corpus (c copies; 0: the embedded default corpus,
read through another source), so the per-byte figure counts reading too.
--against_examples_per_run K compresses only K examples per run of the same corpus: both read
the whole corpus, so reading cancels and the figure is per compressed byte only. --repeats R
runs everything R times, alternating (Beam's floor, then each setting's job and bare run),
keeps the fastest of each, and also prints the per-byte figure of each repeat's own four
processes, whose spread shows how far this machine's noise moves it, and the per-byte split
inside the job (what the job adds beside the compressors, per second of theirs, between the two
settings).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipeline import options as options_lib
from beam_pipeline import pipeline

import scale_benchmark  # benchmarks/ is this script's directory, first on sys.path


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The job in a fresh process, as `python -m beam_pipeline` runs it, reporting its own clock from
# after the imports to the end of the job: imports are a fixed cost (the outer clock counts
# them), and their time varies by tenths of a second from one process to the next here, which
# the per-byte figure, a difference between runs, would otherwise inherit.
JOB = """
import json, resource, sys, time
timing_path, argv = sys.argv[1], sys.argv[2:]
from beam_pipeline import __main__ as job
from beam_pipeline import compress
from neural_compression.m1 import engine  # imported before the clock, as the bare run does
def cpu():
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime
# Inside the job: the seconds spent in the compressors (the bare engine's work) and in loading
# them (M1 and its kernels, which the bare run pays too); everything else is what the job adds.
# Wall seconds and CPU seconds (the process's, all threads: the job's other threads only wait).
spent = {"engine": 0.0, "load": 0.0, "engine_cpu": 0.0, "load_cpu": 0.0}
def timed(function, key):
  def run(*args, **kwargs):
    start, start_cpu = time.perf_counter(), time.process_time()
    try:
      return function(*args, **kwargs)
    finally:
      spent[key] += time.perf_counter() - start
      spent[key + "_cpu"] += time.process_time() - start_cpu
  return run
compress.CompressionHandler.encode_batch = staticmethod(
    timed(compress.CompressionHandler.encode_batch, "engine"))
compress.Compressors.__init__ = timed(compress.Compressors.__init__, "load")
# The runner's execution of the stages: the job's clock less building and checking the graph,
# the runner's start and the commit, which are paid once per job.
from apache_beam.runners.portability.fn_api_runner import fn_runner
spent.update(stages=0.0, stages_cpu=0.0)
fn_runner.FnApiRunner.run_stages = timed(fn_runner.FnApiRunner.run_stages, "stages")
wall, cpu0 = time.perf_counter(), cpu()
rc = job.main(argv)
open(timing_path, "w").write(json.dumps({"wall": time.perf_counter() - wall, "cpu": cpu() - cpu0,
                                         **spent}))
sys.exit(rc)
"""

# The bare engine in a fresh process: load what a worker loads, encode; its own clock runs from
# after the imports (loading M1 and its compiled kernels included) to the last example.
BARE = """
import json, resource, sys, time
import numpy as np
timing_path, path, method_list, checkpoint, context, batch = sys.argv[1:]
dump = np.load(path)
data = np.split(dump["symbols"], dump["ends"][:-1])
from neural_compression import methods
from neural_compression.m1 import engine
def cpu():
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime
wall, cpu0 = time.perf_counter(), cpu()
specs = methods.parse_methods(method_list)
m1 = engine.load_exact_model(checkpoint, max_context=int(context) or None) if any(
    s.uses_m1 for s in specs) else None
for spec in specs:
  compressor = methods.build_compressor(spec, m1_model=m1)
  for i in range(0, len(data), int(batch)):
    compressor.encode_batch(data[i:i + int(batch)])
open(timing_path, "w").write(json.dumps({"wall": time.perf_counter() - wall, "cpu": cpu() - cpu0,
                                         "bytes": sum(len(x) for x in data)}))
"""

# Beam's own floor: a fresh process that imports Beam and runs a one-transform pipeline on the
# same runner. No Beam job, however small its graph, finishes faster than this.
FLOOR = """
import apache_beam as beam
with beam.Pipeline() as p:
  _ = p | beam.Create([0]) | beam.Map(lambda x: x)
"""


def _timed_process(argv: list[str], timing_path: str | None = None) -> dict:
  """Wall and CPU seconds of a fresh Python process running `argv`, from outside (start to exit:
  'wall', 'cpu'), and where the process writes its own clock to `timing_path`, from inside
  ('inner_wall', 'inner_cpu'). CPU seconds (user + system, all its threads) are what the work
  costs on a shared machine: they do not count the time the process waited for a core that a
  neighbour held, which wall time does."""
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  start = time.perf_counter()
  subprocess.run([sys.executable, *argv], check=True, capture_output=True, text=True, cwd=REPO)
  wall = time.perf_counter() - start
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  timing = {"wall": wall,
            "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)}
  if timing_path:
    inner = json.loads(open(timing_path).read())
    timing.update(inner_wall=inner["wall"], inner_cpu=inner["cpu"])
    timing.update({key: inner[key] for key in ("engine", "load", "engine_cpu", "load_cpu", "bytes",
                                               "stages", "stages_cpu")
                   if key in inner})
  return timing


def _write_dump(items, path: str) -> None:
  # One array of every example's symbols, by example id, and where each ends: the bare process
  # reads 390 MB of examples in a fraction of a second (a pickle of them took it seconds, which
  # its outer clock counted as engine time).
  examples = [symbols for _, symbols in sorted(items, key=lambda kv: kv[0])]
  np.savez(path, symbols=np.concatenate(examples),
           ends=np.cumsum([len(x) for x in examples]))


def dump_examples(flags: list[str], dump: str) -> None:
  """Writes the examples a job with `flags` compresses, rebuilt by the job's own stages, to
  `dump` (.npz: `symbols`, every example's symbols in example-id order; `ends`, where each
  ends). Not timed."""
  opts = PipelineOptions(flags).view_as(options_lib.CompressionOptions)
  with beam.Pipeline(options=PipelineOptions(flags)) as p:
    examples, _ = pipeline.read_examples(p, opts)
    _ = (examples | beam.combiners.ToList()
         | beam.Map(_write_dump, dump))


def _dumped_bytes(dump: str) -> int:
  """The symbols (bytes) of every example in a dump (dump_examples)."""
  ends = np.load(dump)["ends"]
  return int(ends[-1]) if len(ends) else 0


def measure(flags: list[str], out_dir: str, dump: str, methods: str, batch_size: int) -> dict:
  """Runs the job with `flags` into `out_dir`, then the bare compressors on the examples it
  compressed (`dump`); returns the bytes compressed and the times of both (seconds, see
  _timed_process), keyed job_*, bare_*."""
  job = _timed_process(["-c", JOB, f"{out_dir}.timing", *flags, f"--output_dir={out_dir}"],
                       f"{out_dir}.timing")
  manifest = json.loads(open(f"{out_dir}/manifest.json").read())
  if manifest.get("static_unigram_sha256") or manifest.get("spm_model_sha256"):
    raise SystemExit("pick methods without estimated artifacts (M1 methods, gzip, bytes)")
  checkpoint = PipelineOptions(flags).view_as(options_lib.CompressionOptions).m1_checkpoint
  bare = _timed_process(["-c", BARE, f"{out_dir}.bare_timing", dump, methods, checkpoint,
                         str(manifest.get("m1_context") or 0), str(batch_size)],
                        f"{out_dir}.bare_timing")
  row = {"bytes": manifest["counters"]["runs/bytes_in_examples"]}
  if bare.pop("bytes") != row["bytes"]:
    raise SystemExit(f"the bare run compressed other bytes than the job ({row['bytes']:,})")
  row.update({f"job_{k}": v for k, v in job.items()})
  row.update({f"bare_{k}": v for k, v in bare.items()})
  return row


def _rest(row: dict, cpu: bool = False) -> float:
  """Seconds of the job, after its imports, outside the compressors and their loading (wall
  seconds, or CPU seconds with `cpu`)."""
  if cpu:
    return row["job_inner_cpu"] - row["job_engine_cpu"] - row["job_load_cpu"]
  return row["job_inner_wall"] - row["job_engine"] - row["job_load"]


def _rest_in_stages(row: dict, cpu: bool = False) -> float:
  """_rest, counting only the runner's execution of the stages (what is paid once per job,
  building the graph, the runner's start and the commit, left out)."""
  suffix = "_cpu" if cpu else ""
  return (row[f"job_stages{suffix}"] - row[f"job_engine{suffix}"] - row[f"job_load{suffix}"])


def _median(values: list[float]) -> float:
  values = sorted(values)
  mid = len(values) // 2
  return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def _source_flags(out: str, copies: int, doc_bytes: int = 0) -> list[str]:
  """The job's input flags: the embedded default corpus (copies 0), or `copies` copies of it
  written as C4 JSON shards under `out` (distinct URLs; documents cut into about `doc_bytes`
  bytes each if > 0), with run buckets and shards scaled as scale_benchmark scales them, so
  that each key's work stays what it is on the default corpus."""
  if not copies:
    return []
  corpus_dir = pathlib.Path(out) / f"corpus_{copies}x_{doc_bytes}"
  if not corpus_dir.exists():
    scale_benchmark.write_corpus(corpus_dir, copies, doc_bytes=doc_bytes)
  return ["--source=c4_json", f"--input={corpus_dir}/c4-train.*.json.gz",
          f"--run_buckets={copies}", f"--num_shards={4 * copies}"]


def _label(copies: int, examples_per_run: int, doc_bytes: int = 0) -> str:
  corpus_name = f"{copies} copies of the default corpus" if copies else "the default corpus"
  if copies and doc_bytes:
    corpus_name += f" cut into documents of ~{doc_bytes:,} bytes"
  return f"{corpus_name}, --examples_per_run {examples_per_run}"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--examples_per_run", type=int, default=40)
  parser.add_argument("--methods", default="equal_info_ac:b16:v65k")
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--repeats", type=int, default=1)
  parser.add_argument("--corpus_copies", type=int, default=0,
                      help="C > 0: run on C copies of the default corpus (C4 JSON shards, "
                           "distinct URLs) instead of the embedded default corpus")
  parser.add_argument("--against_examples_per_run", type=int, default=0,
                      help="K > 0: also run on K examples per run of the same corpus, and split "
                           "the overhead into its fixed and per-compressed-byte parts")
  parser.add_argument("--against_corpus_copies", type=int, default=-1,
                      help="c >= 0: also run on c copies of the default corpus (0: the embedded "
                           "one), and split the overhead into its fixed and per-byte parts")
  parser.add_argument("--doc_bytes", type=int, default=0,
                      help="with --corpus_copies: cut the documents at line ends into documents "
                           "of about this many bytes (C4 en averages ~2,200; the default "
                           "corpus's are 49 KB), so that per-document costs weigh as on C4")
  parser.add_argument("--keep_files", action="store_true",
                      help="keep the scratch directory (corpora, dumps, runs), which is deleted "
                           "otherwise")
  args = parser.parse_args()
  if args.against_examples_per_run and args.against_corpus_copies >= 0:
    raise SystemExit("pick one of --against_examples_per_run and --against_corpus_copies")
  out = tempfile.mkdtemp(prefix="pipeline_bench_")
  try:
    _benchmark(args, out)
  finally:
    # Corpus copies, example dumps and every run's records: gigabytes at --corpus_copies 32.
    if args.keep_files:
      print(f"files kept in {out}")
    else:
      shutil.rmtree(out, ignore_errors=True)


def _benchmark(args, out: str) -> None:
  """Runs the settings `args` asks for, in the scratch directory `out`, and prints the figures."""
  settings = [(args.corpus_copies, args.examples_per_run)]
  if args.against_examples_per_run:
    settings.append((args.corpus_copies, args.against_examples_per_run))
  elif args.against_corpus_copies >= 0:
    settings.append((args.against_corpus_copies, args.examples_per_run))
  if len(set(settings)) != len(settings):
    raise SystemExit("the two settings are the same")
  flags, dumps = {}, {}
  for index, (copies, examples_per_run) in enumerate(settings):
    os.makedirs(f"{out}/{index}")
    flags[index] = [*_source_flags(out, copies, args.doc_bytes), f"--methods={args.methods}",
                    f"--examples_per_run={examples_per_run}", f"--batch_size={args.batch_size}"]
    dumps[index] = f"{out}/{index}/examples.npz"
    dump_examples(flags[index], dumps[index])
  if len(settings) == 2 and _dumped_bytes(dumps[1]) >= _dumped_bytes(dumps[0]):
    # Checked before any timing: the per-byte figure divides by the bytes between them.
    raise SystemExit("the second setting must compress fewer bytes than the first")
  # Alternating: every repeat runs Beam's floor, then each setting's job and bare engine, so
  # that a slow minute of this machine falls on all of them rather than on one setting.
  runs = {index: [] for index in flags}
  floors = []
  for i in range(args.repeats):
    floors.append(_timed_process(["-c", FLOOR]))
    for index in flags:
      runs[index].append(measure(flags[index], f"{out}/{index}/run{i}", dumps[index],
                                 args.methods, args.batch_size))
  best = {index: {key: min(r[key] for r in rs) for key in rs[0]} for index, rs in runs.items()}
  floor = {key: min(f[key] for f in floors) for key in ("wall", "cpu")}
  print(f"Beam's floor (fresh process: import apache_beam, run a one-transform pipeline on the "
        f"DirectRunner), best of {args.repeats}: {floor['wall']:.2f} s, {floor['cpu']:.2f} CPU s")
  for index, setting in enumerate(settings):
    r = best[index]
    print(f"{_label(*setting, args.doc_bytes)}: {r['bytes']:,} bytes compressed, methods "
          f"{args.methods}")
    print(f"  job (DirectRunner, everything included, best of {args.repeats}): "
          f"{r['job_wall']:.2f} s, {r['bytes'] / r['job_wall']:,.0f} bytes/s; "
          f"{r['job_cpu']:.2f} CPU s")
    print(f"  bare compressors on the same examples, fresh process, M1 load included, best of "
          f"{args.repeats}: {r['bare_wall']:.2f} s, {r['bytes'] / r['bare_wall']:,.0f} bytes/s; "
          f"{r['bare_cpu']:.2f} CPU s")
    print(f"  job overhead: {100 * (r['job_wall'] / r['bare_wall'] - 1):+.1f}% wall, "
          f"{100 * (r['job_cpu'] / r['bare_cpu'] - 1):+.1f}% CPU (bound: at most +15%)")
    # What the bound leaves for everything Beam adds, against what Beam alone costs.
    print(f"  +15% of the bare run is {0.15 * r['bare_wall']:.2f} s; Beam's floor alone is "
          f"{floor['wall']:.2f} s = {100 * floor['wall'] / r['bare_wall']:+.1f}% of it")
    # The same job split by its own clock: one process, so a slow minute of this machine slows
    # both parts alike, and the split moves far less than any ratio of two processes.
    for clock, engine_key, cpu in (("wall", "job_engine", False), ("CPU", "job_engine_cpu", True)):
      shares = sorted(_rest(x, cpu) / x[engine_key] for x in runs[index])
      print(f"  inside the job (each repeat's own clock, after the imports), {clock} seconds: "
            f"compressors {_median([x[engine_key] for x in runs[index]]):.2f} s, loading them "
            f"{_median([x[engine_key.replace('engine', 'load')] for x in runs[index]]):.2f} s, "
            f"everything else {_median([_rest(x, cpu) for x in runs[index]]):.2f} s = "
            f"{100 * _median(shares):+.1f}% of the compressors' time (from {100 * shares[0]:+.1f}% "
            f"to {100 * shares[-1]:+.1f}%; medians of {len(shares)})", flush=True)
  if len(settings) == 2:
    big, small = runs[0], runs[1]
    between = big[0]["bytes"] - small[0]["bytes"]
    what = ("compressed byte (the same corpus read by both, so reading it cancels)"
            if settings[0][0] == settings[1][0] else "byte (corpus read and compressed)")
    print(f"overhead per {what}, from the {between:,} bytes between the two settings, bound: at "
          f"most +15%:")
    for clock, key in (("outer clock (process start to exit), wall", "wall"),
                       ("outer clock, CPU", "cpu"),
                       ("inner clock (after the imports), wall", "inner_wall"),
                       ("inner clock, CPU", "inner_cpu")):
      b, s = best[0], best[1]
      best_of = (b[f"job_{key}"] - s[f"job_{key}"]) / (b[f"bare_{key}"] - s[f"bare_{key}"]) - 1
      # The same figure from each repeat's own four processes (run i of both settings): its
      # spread says how far this machine's noise moves it.
      pairs = sorted((bi[f"job_{key}"] - si[f"job_{key}"]) / (bi[f"bare_{key}"] - si[f"bare_{key}"])
                     - 1 for bi, si in zip(big, small))
      print(f"  {clock}: best-of {100 * best_of:+.1f}%; per repeat ({len(pairs)}): median "
            f"{100 * _median(pairs):+.1f}%, from {100 * pairs[0]:+.1f}% to {100 * pairs[-1]:+.1f}%;"
            f" the job's extra seconds {s[f'job_{key}'] - s[f'bare_{key}']:.2f} s at "
            f"{s['bytes']:,} bytes, {b[f'job_{key}'] - b[f'bare_{key}']:.2f} s at "
            f"{b['bytes']:,} bytes")
    # Per byte inside the job: what the job adds beside the compressors, against the
    # compressors' own time, between the two settings (each repeat's pair of jobs).
    for clock, engine_key, cpu in (("wall", "job_engine", False), ("CPU", "job_engine_cpu", True)):
      per_byte = sorted((_rest(bi, cpu) - _rest(si, cpu)) / (bi[engine_key] - si[engine_key])
                        for bi, si in zip(big, small))
      print(f"  inside the job (its own clock, one process per figure), {clock} seconds: "
            f"everything but the compressors adds a median {100 * _median(per_byte):+.1f}% to "
            f"their time per byte (from {100 * per_byte[0]:+.1f}% to {100 * per_byte[-1]:+.1f}%, "
            f"{len(per_byte)} pairs)")
    # The same, counting only the runner's execution of the stages: the once-per-job phases
    # (graph, runner start, commit) cancel between the settings on average, but their noise
    # (their time moved by a second between two processes here) does not.
    if all(r.get("job_stages") for r in big + small):
      for clock, engine_key, cpu in (("wall", "job_engine", False),
                                     ("CPU", "job_engine_cpu", True)):
        per_byte = sorted((_rest_in_stages(bi, cpu) - _rest_in_stages(si, cpu))
                          / (bi[engine_key] - si[engine_key]) for bi, si in zip(big, small))
        once = _median([x["job_inner" + ("_cpu" if cpu else "_wall")]
                        - x["job_stages" + ("_cpu" if cpu else "")] for x in big + small])
        print(f"  inside the runner's stages only ({clock} seconds; the job's once-per-job "
              f"phases outside them took a median {once:.2f} s): everything but the "
              f"compressors adds a median {100 * _median(per_byte):+.1f}% to their time per "
              f"byte (from {100 * per_byte[0]:+.1f}% to {100 * per_byte[-1]:+.1f}%, "
              f"{len(per_byte)} pairs)")

if __name__ == "__main__":
  main()
