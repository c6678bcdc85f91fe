"""Tables and plots of the M2 learnability runs (experiments/m2_learnability.py).

  python experiments/m2_report.py [--runs runs/m2] [--figures docs/figures]

Reads every <runs>/<slug>/summary.json and metrics.jsonl (written by neural_compression.m2.train) and
writes two PNGs, the analogues of the paper's Figures 3 and 4 at one M2 size:

  m2_bits_per_byte_vs_flops.png      validation bits/byte against training FLOPs (M2 training
                                     plus, for methods that run M1, M1's inference on the bytes
                                     seen), one curve per method;
  m2_bits_per_byte_vs_bytes_per_step.png  final validation bits/byte against source bytes per
                                     training step (tokens per step * bytes per token);

and prints a Markdown table of the final figures beside the paper's 25m results.
"""
from __future__ import annotations

import argparse
import json
import pathlib

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

# The paper's smallest M2 (25m), validation bits/byte (paper_facts.md).
PAPER_25M = {"bytes": 1.29, "spm:v32k": 1.12, "ac:v256": 1.46, "ac:v65k": 1.46,
             "static_ac:v256": 4.61, "equal_info_ac:b16:v256": 1.47,
             "equal_info_ac:b16:v65k": 1.25, "gzip:v256": 2.34, "gzip:v65k": 2.92}
LABELS = {"bytes": "Bytes", "spm:v32k": "SentencePiece", "ac:v256": "AC[v=256]",
          "static_ac:v256": "StaticAC[v=256]", "gzip:v256": "GZip[v=256]",
          "equal_info_ac:b16:v256": "EqualInfoAC[b=16, v=256]",
          "equal_info_ac:b16:v65k": "EqualInfoAC[b=16, v=65k]"}


def load_runs(root: pathlib.Path) -> list[dict]:
  """Completed runs under root: summary.json plus its curve (metrics.jsonl rows)."""
  runs = []
  for summary_path in sorted(root.glob("*/summary.json")):
    run = json.loads(summary_path.read_text())
    rows = summary_path.with_name("metrics.jsonl").read_text().splitlines()
    run["curve"] = [json.loads(r) for r in rows if r.strip()]
    runs.append(run)
  if not runs:
    raise SystemExit(f"no finished runs (summary.json) under {root}")
  return runs


def label(method: str) -> str:
  return LABELS.get(method, method)


def plot_curves(runs: list[dict], path: pathlib.Path) -> None:
  fig, ax = plt.subplots(figsize=(7.5, 4.8))
  for run in runs:
    # Periodic evaluations cover --eval_records evenly spaced validation records; the final one
    # (the star, the tables' figure) covers all of them, so it may sit off the curve.
    curve, final = run["curve"][:-1], run["final"]
    line, = ax.plot([r["total_flops"] for r in curve], [r["bits_per_byte"] for r in curve],
                    marker="o", markersize=3, label=label(run["method"]))
    ax.plot([final["total_flops"]], [final["bits_per_byte"]], marker="*", markersize=10,
            color=line.get_color(), linestyle="none")
    # Each method's uniform rate (a model that learned nothing), same colour, dotted.
    ax.axhline(run["final"]["uniform_bits_per_byte"], color=line.get_color(), linestyle=":",
               linewidth=0.8)
  ax.set_xscale("log")
  ax.set_xlabel("training FLOPs (M2 training + M1 inference on the bytes seen)")
  ax.set_ylabel("validation bits/byte")
  ax.set_title("M2 learning curves at equal M2 compute\n(dots: 64 evenly spaced validation "
               "records; star: all records; dotted: each method's uniform rate)", fontsize=10)
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_bytes_per_step(runs: list[dict], path: pathlib.Path) -> None:
  fig, ax = plt.subplots(figsize=(7.5, 4.8))
  for run in runs:
    x, y = run["bytes_per_step"], run["final"]["bits_per_byte"]
    ax.scatter([x], [y], s=30)
    ax.annotate(label(run["method"]), (x, y), textcoords="offset points", xytext=(5, 4),
                fontsize=8)
  ax.set_xscale("log")
  ax.set_xlabel("source bytes per training step (tokens per step x bytes per token)")
  ax.set_ylabel("final validation bits/byte")
  ax.set_title("Final M2 bits/byte against bytes per step (equal M2 compute)")
  ax.grid(True, which="both", alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def markdown_table(runs: list[dict]) -> str:
  lines = ["| method | bytes/token | bytes/step | M2 FLOPs | total FLOPs | bits/byte | uniform "
           "bits/byte | learned vs uniform | paper 25m |",
           "|---|---|---|---|---|---|---|---|---|"]
  for run in sorted(runs, key=lambda r: r["final"]["bits_per_byte"]):
    final = run["final"]
    paper = PAPER_25M.get(run["method"])
    gain = 1 - final["bits_per_byte"] / final["uniform_bits_per_byte"]
    lines.append(
        f"| {label(run['method'])} | {run['train_bytes_per_token']:.2f} | "
        f"{run['bytes_per_step']:,.0f} | {final['m2_train_flops']:.2e} | "
        f"{final['total_flops']:.2e} | {final['bits_per_byte']:.3f} | "
        f"{final['uniform_bits_per_byte']:.3f} | {gain:+.1%} | "
        f"{'-' if paper is None else f'{paper:.2f}'} |")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--runs", default="runs/m2")
  parser.add_argument("--figures", default="docs/figures")
  args = parser.parse_args()
  runs = load_runs(pathlib.Path(args.runs))
  figures = pathlib.Path(args.figures)
  figures.mkdir(parents=True, exist_ok=True)
  plot_curves(runs, figures / "m2_bits_per_byte_vs_flops.png")
  plot_bytes_per_step(runs, figures / "m2_bits_per_byte_vs_bytes_per_step.png")
  first = runs[0]
  print(f"M2 {first['size']} ({first['non_embedding_params']:,} non-embedding parameters), "
        f"{first['steps']} steps of {first['tokens_per_step']:,} tokens; bits/byte over all "
        f"validation records of each method\n")
  print(markdown_table(runs))
  print(f"\nfigures: {figures}/m2_bits_per_byte_vs_flops.png, "
        f"{figures}/m2_bits_per_byte_vs_bytes_per_step.png")


if __name__ == "__main__":
  main()
