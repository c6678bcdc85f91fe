"""`python -m neural_compression.m1.export_exact --checkpoint=DIR`: add the exact integer model
(exact_quantization) to a float M1 checkpoint, calibrated on the default corpus's train split.

Run once after training; the exported integers (exact.npz, exact_config.json with its sha256)
are what every worker loads, so the CDFs are identical everywhere.
"""
from __future__ import annotations

import argparse

from neural_compression import corpus
from neural_compression.m1 import exact_quantization


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--checkpoint", default="m1_checkpoint")
  parser.add_argument("--calibration_documents", type=int, default=64,
                      help="train documents whose text calibrates activation ranges")
  args = parser.parse_args(argv)
  docs = list(corpus.default_corpus_documents("train"))
  step = max(1, len(docs) // args.calibration_documents)
  texts = [d["text"].encode("utf-8") for d in docs[::step][:args.calibration_documents]]
  digest = exact_quantization.export_checkpoint(args.checkpoint, texts)
  print(f"exact model written to {args.checkpoint} (sha256 {digest})")


if __name__ == "__main__":
  main()
