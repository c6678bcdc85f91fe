"""The scale path: peak memory of the launcher and the workers as the corpus grows, one run.

  python benchmarks/scale_benchmark.py [--scales 1,2,4] [--workers 2]

Builds corpora of k times the default corpus (its 249 documents repeated with distinct URLs,
read at run time from the pinned package, written as C4 JSON shards), runs the job on each in a
subprocess (DirectRunner, multi_processing with --workers worker processes) with budgets that do
not grow with the corpus (--spm_train_bytes, examples per run, run buckets and shards scaled
with k so that each key's work stays the same), and samples the peak RSS (VmHWM) of the launcher
and of every worker process. Prints them side by side per scale, with each run's artifact
checksums: the same k run with one in-process worker must give the same artifacts.

What grows and what does not: our own state is bounded (the unigram counts, the document
fingerprints, the SentencePiece sample of at most --spm_train_bytes, one batch and the models per
worker); Beam's local runner keeps the data between stages in memory, which Dataflow keeps in
its shuffle service, so the local launcher's peak also reflects the corpus size.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from neural_compression import corpus

REPO = pathlib.Path(__file__).resolve().parent.parent
METHODS = "bytes,static_ac:v256,gzip:v256,spm:v8k"


def write_corpus(directory: pathlib.Path, copies: int, shards_per_copy: int = 4) -> int:
  """k copies of the default corpus as gzipped C4 JSON shards; returns the text bytes."""
  docs = list(corpus.default_corpus_documents())
  directory.mkdir(parents=True)
  nbytes = 0
  shards = copies * shards_per_copy
  files = [gzip.open(directory / f"c4-train.{s:05d}-of-{shards:05d}.json.gz", "wt",
                     encoding="utf-8") for s in range(shards)]
  for copy in range(copies):
    for i, doc in enumerate(docs):
      record = {**doc, "url": f"{doc['url']}#copy{copy}"}
      files[(copy * len(docs) + i) % shards].write(json.dumps(record) + "\n")
      nbytes += len(doc["text"].encode())
  for f in files:
    f.close()
  return nbytes


def _children(pid: int) -> list[int]:
  out = []
  for task in pathlib.Path(f"/proc/{pid}/task").glob("*"):
    try:
      out += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
      pass
  return out


def _peak_rss_mb(pid: int) -> float | None:
  try:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 1024
  except OSError:
    return None
  return None


# The artifact estimation alone (one Beam pass of combines over the train split, then
# SentencePiece on the launcher), as the job runs it before compressing.
_ESTIMATE_ONLY = """
import sys
from apache_beam.options.pipeline_options import PipelineOptions
from beam_pipeline import artifacts, options
from neural_compression import methods
pipeline_options = PipelineOptions(sys.argv[1:])
opts = pipeline_options.view_as(options.CompressionOptions)
artifacts.prepare(opts, pipeline_options, methods.parse_methods(opts.methods))
"""


def run_job(argv: list[str], estimate_only: bool = False) -> dict:
  """Runs the job (or only its artifact estimation) in a subprocess; returns wall time and the
  peak RSS of the launcher and of its worker processes."""
  start = time.perf_counter()
  command = ["-c", _ESTIMATE_ONLY] if estimate_only else ["-m", "beam_pipeline"]
  proc = subprocess.Popen([sys.executable, *command, *argv], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  launcher, workers = 0.0, {}
  while proc.poll() is None:
    launcher = max(launcher, _peak_rss_mb(proc.pid) or 0.0)
    stack = _children(proc.pid)
    while stack:
      pid = stack.pop()
      rss = _peak_rss_mb(pid)
      if rss is not None:
        workers[pid] = max(workers.get(pid, 0.0), rss)
      stack += _children(pid)
    time.sleep(0.2)
  output = proc.stdout.read()
  if proc.returncode:
    raise RuntimeError(f"job failed ({proc.returncode}):\n{output[-3000:]}")
  return {"seconds": time.perf_counter() - start, "launcher_mb": launcher,
          "worker_mb": max(workers.values(), default=0.0), "worker_processes": len(workers)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--scales", default="1,2,4")
  parser.add_argument("--workers", type=int, default=2)
  parser.add_argument("--spm_train_bytes", type=int, default=2_000_000)
  args = parser.parse_args()
  root = pathlib.Path(tempfile.mkdtemp(prefix="scale_bench_"))
  rows = []
  for k in (int(s) for s in args.scales.split(",")):
    nbytes = write_corpus(root / f"c4_{k}x", k)
    common = ["--source=c4_json", f"--input={root / f'c4_{k}x'}/c4-train.*.json.gz",
              f"--methods={METHODS}", f"--spm_train_bytes={args.spm_train_bytes}",
              "--examples_per_run=2", f"--run_buckets={k}", f"--num_shards={4 * k}"]
    multi = run_job([*common, f"--output_dir={root / f'run_{k}x'}",
                     "--direct_running_mode=multi_processing",
                     f"--direct_num_workers={args.workers}"])
    estimate = run_job([*common, f"--output_dir={root / f'estimate_{k}x'}",
                        "--direct_running_mode=multi_processing",
                        f"--direct_num_workers={args.workers}"], estimate_only=True)
    manifest = json.loads((root / f"run_{k}x" / "manifest.json").read_text())
    row = {"k": k, "corpus_mb": nbytes / 1e6, **multi,
           "estimate_launcher_mb": estimate["launcher_mb"],
           "estimate_worker_mb": estimate["worker_mb"], "estimate_seconds": estimate["seconds"],
           "documents": manifest["counters"]["sources/documents_read"],
           "unigram": manifest["static_unigram_sha256"][:12],
           "spm": manifest["spm_model_sha256"][:12],
           "spm_sample_mb": manifest["artifacts"]["spm"]["estimated_from"]["bytes"] / 1e6}
    if k == 1:  # the same corpus with one in-process worker: the artifacts must not change
      single = run_job([*common, f"--output_dir={root / 'run_1x_single'}"])
      m1 = json.loads((root / "run_1x_single" / "manifest.json").read_text())
      row["same_artifacts_1_worker"] = (m1["static_unigram_sha256"][:12] == row["unigram"]
                                        and m1["spm_model_sha256"][:12] == row["spm"])
      row["single_launcher_mb"] = single["launcher_mb"]
    rows.append(row)
    print(json.dumps(row), flush=True)
  print()
  print("peak RSS in MB; 'estimate' = the artifact estimation alone (combines + SentencePiece), "
        "'job' = the whole job on Beam's local runner")
  print(f"{'scale':>5s} {'corpus MB':>9s} {'docs':>6s} {'spm sample MB':>13s} "
        f"{'estimate launcher':>17s} {'estimate worker':>15s} {'job s':>6s} "
        f"{'job launcher':>12s} {'job worker':>10s} {'unigram':>12s} {'spm':>12s}")
  for r in rows:
    print(f"{r['k']:>4d}x {r['corpus_mb']:9.1f} {r['documents']:6d} {r['spm_sample_mb']:13.2f} "
          f"{r['estimate_launcher_mb']:17.0f} {r['estimate_worker_mb']:15.0f} "
          f"{r['seconds']:6.1f} {r['launcher_mb']:12.0f} {r['worker_mb']:10.0f} "
          f"{r['unigram']:>12s} {r['spm']:>12s}")
  first, last = rows[0], rows[-1]
  ratio = lambda key: last[key] / max(first[key], 1e-9)
  print(f"\ncorpus x{last['corpus_mb'] / first['corpus_mb']:.1f}: artifact estimation peak "
        f"x{ratio('estimate_launcher_mb'):.2f} launcher, x{ratio('estimate_worker_mb'):.2f} "
        "workers (bound: flat, x1.0 up to noise); whole job on the local runner "
        f"x{ratio('launcher_mb'):.2f} launcher, x{ratio('worker_mb'):.2f} workers (the local "
        "runner holds each stage's data in memory; Dataflow's shuffle does not)")
  if "same_artifacts_1_worker" in first:
    print(f"artifacts identical with 1 in-process worker and {args.workers} worker processes: "
          f"{first['same_artifacts_1_worker']}")
  print(f"(work files under {root}; delete them when done)")
  os.sync()


if __name__ == "__main__":
  main()
