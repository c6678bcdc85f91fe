"""The scale path: peak memory of the launcher and the workers as the corpus grows, one run.

  python benchmarks/scale_benchmark.py [--scales 1,2,4] [--workers 2] [--shuffles files,beam]
      [--examples_per_run 0]

Builds corpora of k times the default corpus (its 249 documents repeated with distinct URLs,
read at run time from the pinned package, written as C4 JSON shards), runs the job on each in a
subprocess (DirectRunner, multi_processing with --workers worker processes) with budgets that do
not grow with the corpus (--spm_train_bytes; run buckets and shards scaled with k so that each
key's work stays the same; every example compressed unless --examples_per_run says
otherwise), and samples the peak RSS (VmHWM) of the launcher and of every worker process.
Prints them side by side per scale, with each run's artifact checksums: the same k run with one in-process worker must give the same artifacts.

The whole job runs once per --shuffles mode: `files` (what --shuffle=auto picks on the local
runner: documents and records grouped through spill files) and `beam` (GroupByKey). Our own
state is bounded (the unigram counts, the document fingerprints, the SentencePiece sample of at
most --spm_train_bytes, one batch, a spill buffer and the models per worker); Beam's local runner
keeps the data between stages in memory (Dataflow keeps it in its shuffle service), so with
`beam` the local job's peak grows with the corpus, and with `files` it must not. Both modes must
write the same records (their shard checksums are compared).
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
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


def _records_checksum(manifest: dict) -> str:
  return hashlib.sha256("".join(sorted(f["path"] + f["sha256"] for f in manifest["files"]))
                        .encode()).hexdigest()[:12]


def cut_document(text: str, doc_bytes: int) -> list[str]:
  """`text` cut at line ends into pieces of about `doc_bytes` UTF-8 bytes (each at least that,
  the last maybe less; a piece ends at a line's end, whose newline is left out)."""
  pieces, lines, held = [], [], 0
  for line in text.split("\n"):
    lines.append(line)
    held += len(line.encode("utf-8")) + 1
    if held >= doc_bytes:
      pieces.append("\n".join(lines))
      lines, held = [], 0
  if lines:
    pieces.append("\n".join(lines))
  return pieces


def write_corpus(directory: pathlib.Path, copies: int, shards_per_copy: int = 4,
                 doc_bytes: int = 0) -> int:
  """k copies of the default corpus as gzipped C4 JSON shards; returns the text bytes.

  doc_bytes > 0 cuts every document at line ends into documents of about that many bytes (C4
  en's average is ~2.2 KB; the default corpus's 49 KB), each with its own URL."""
  docs = list(corpus.default_corpus_documents())
  if doc_bytes > 0:
    docs = [{**doc, "text": piece, "url": f"{doc['url']}#part{part}"}
            for doc in docs for part, piece in enumerate(cut_document(doc["text"], doc_bytes))]
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
  parser.add_argument("--examples_per_run", type=int, default=0,
                      help="0 compresses every example (default), K the first K of each run")
  parser.add_argument("--shuffles", default="files,beam",
                      help="--shuffle modes to run the whole job with, each at every scale")
  args = parser.parse_args()
  shuffles = args.shuffles.split(",")
  root = pathlib.Path(tempfile.mkdtemp(prefix="scale_bench_"))
  rows = []
  for k in (int(s) for s in args.scales.split(",")):
    nbytes = write_corpus(root / f"c4_{k}x", k)
    common = ["--source=c4_json", f"--input={root / f'c4_{k}x'}/c4-train.*.json.gz",
              f"--methods={METHODS}", f"--spm_train_bytes={args.spm_train_bytes}",
              f"--examples_per_run={args.examples_per_run}", f"--run_buckets={k}",
              f"--num_shards={4 * k}"]
    jobs, checksums = {}, {}
    for shuffle in shuffles:
      out = root / f"run_{k}x_{shuffle}"
      jobs[shuffle] = run_job([*common, f"--output_dir={out}", f"--shuffle={shuffle}",
                               "--direct_running_mode=multi_processing",
                               f"--direct_num_workers={args.workers}"])
      checksums[shuffle] = _records_checksum(json.loads((out / "manifest.json").read_text()))
    estimate = run_job([*common, f"--output_dir={root / f'estimate_{k}x'}",
                        "--direct_running_mode=multi_processing",
                        f"--direct_num_workers={args.workers}"], estimate_only=True)
    manifest = json.loads((root / f"run_{k}x_{shuffles[0]}" / "manifest.json").read_text())
    row = {"k": k, "corpus_mb": nbytes / 1e6,
           **{f"{mode}_{key}": value for mode, job in jobs.items() for key, value in job.items()},
           "records": checksums[shuffles[0]],
           "same_records_every_shuffle": len(set(checksums.values())) == 1,
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
        "'<shuffle> job' = the whole job on Beam's local runner with --shuffle=<shuffle>")
  job_heads = "".join(f" {mode + ' job s':>12s} {mode + ' launcher':>14s} {mode + ' worker':>12s}"
                      for mode in shuffles)
  print(f"{'scale':>5s} {'corpus MB':>9s} {'docs':>6s} {'spm sample MB':>13s} "
        f"{'estimate launcher':>17s} {'estimate worker':>15s}{job_heads} {'records':>12s} "
        f"{'unigram':>12s} {'spm':>12s}")
  for r in rows:
    jobs = "".join(f" {r[mode + '_seconds']:12.1f} {r[mode + '_launcher_mb']:14.0f} "
                   f"{r[mode + '_worker_mb']:12.0f}" for mode in shuffles)
    print(f"{r['k']:>4d}x {r['corpus_mb']:9.1f} {r['documents']:6d} {r['spm_sample_mb']:13.2f} "
          f"{r['estimate_launcher_mb']:17.0f} {r['estimate_worker_mb']:15.0f}{jobs} "
          f"{r['records']:>12s} {r['unigram']:>12s} {r['spm']:>12s}")
  first, last = rows[0], rows[-1]
  ratio = lambda key: last[key] / max(first[key], 1e-9)
  print(f"\ncorpus x{last['corpus_mb'] / first['corpus_mb']:.1f}: artifact estimation peak "
        f"x{ratio('estimate_launcher_mb'):.2f} launcher, x{ratio('estimate_worker_mb'):.2f} "
        "workers (bound: flat, x1.0 up to noise)")
  for mode in shuffles:
    bound = ("bound: flat, x1.0 up to noise" if mode == "files" else
             "the local runner holds each stage's data in memory; Dataflow's shuffle does not")
    print(f"whole job, --shuffle={mode}: x{ratio(mode + '_launcher_mb'):.2f} launcher, "
          f"x{ratio(mode + '_worker_mb'):.2f} workers ({bound})")
  print("records identical with every --shuffle at every scale: "
        f"{all(r['same_records_every_shuffle'] for r in rows)}")
  if "same_artifacts_1_worker" in first:
    print(f"artifacts identical with 1 in-process worker and {args.workers} worker processes: "
          f"{first['same_artifacts_1_worker']}")
  print(f"(work files under {root}; delete them when done)")
  os.sync()


if __name__ == "__main__":
  main()
