"""M2 learnability at small scale: one M2 per method, equal compute, the paper's Figure 3/4 setting.

  python experiments/m2_learnability.py --data_dir output/m2_data --ac_data_dir output/m2_ac \
      [--steps 400] [--out_root runs/m2] [--methods bytes,equal_info_ac:b16:v65k,...]

Every method trains the same M2 (--size, non-embedding parameters fixed) for the same number of
steps of the same batch of tokens, so M2 training FLOPs are equal across methods (the paper's
convention: embeddings excluded); what differs is how many source bytes a token carries. Each run
is `python -m neural_compression.m2.train` in its own process, resumable: a method whose summary.json
exists is skipped, an interrupted one resumes from its last state. Plots and tables:
experiments/m2_report.py.

The data directories are Beam job runs (see docs/results.md for the commands): --data_dir holds
every method but AC, --ac_data_dir AC[v=256] (a smaller subset: full-context M1 coding runs at
~1 kB/s on this CPU).
"""
from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
import time

from neural_compression import methods

# The seven: Bytes, SentencePiece, AC, StaticAC, EqualInfoAC b16 (v256, v65k), GZip.
DEFAULT_METHODS = ("bytes", "equal_info_ac:b16:v65k", "equal_info_ac:b16:v256",
                   "static_ac:v256", "gzip:v256", "spm:v32k", "ac:v256")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default="output/m2_data")
  parser.add_argument("--ac_data_dir", default="output/m2_ac",
                      help="the run holding ac:* methods")
  parser.add_argument("--out_root", default="runs/m2")
  parser.add_argument("--methods", default=",".join(DEFAULT_METHODS))
  parser.add_argument("--size", default="cpu400k")
  parser.add_argument("--steps", type=int, default=400)
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--seq_len", type=int, default=512)
  parser.add_argument("--eval_every", type=int, default=50)
  parser.add_argument("--eval_records", type=int, default=64)
  args = parser.parse_args()
  for method in args.methods.split(","):
    spec = methods.parse_method(method)
    out_dir = pathlib.Path(args.out_root) / spec.slug
    if (out_dir / "summary.json").exists():
      print(f"{method}: done ({out_dir}/summary.json)", flush=True)
      continue
    data_dir = args.ac_data_dir if spec.kind == "ac" else args.data_dir
    cmd = [sys.executable, "-m", "neural_compression.m2.train", f"--task=c4_{spec.slug}",
           f"--data_dir={data_dir}", f"--out_dir={out_dir}", f"--size={args.size}",
           f"--steps={args.steps}", f"--batch_size={args.batch_size}",
           f"--seq_len={args.seq_len}", f"--eval_every={args.eval_every}",
           f"--eval_records={args.eval_records}", "--resume"]
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"{method}: {' '.join(cmd)}", flush=True)
    start = time.time()
    with open(out_dir / "train.log", "a") as log:
      rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    print(f"{method}: exit {rc} after {time.time() - start:.0f}s", flush=True)
    if rc:
      sys.exit(rc)


if __name__ == "__main__":
  main()
