"""Coder throughput with a cheap model (static unigram), so the coder's own cost is known.

Prints encode and decode bytes/s for each arithmetic-coding method on validation examples of the
default corpus, measured side by side in one run. The model costs one array lookup per symbol
here, so these figures are the coder's ceiling; compare them with the M1 engine's throughput.

Usage: python benchmarks/coder_benchmark.py [--examples 4]
"""
from __future__ import annotations

import argparse
import time

from neural_compression import arithmetic_compressors as acc
from neural_compression import corpus
from neural_compression import examples as ex
from neural_compression import static_unigram


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--examples", type=int, default=4, help="10,240-byte validation examples")
  args = parser.parse_args()
  model = static_unigram.StaticUnigramModel.estimate(corpus.default_corpus_documents("train"))
  docs = [d["text"] for d in corpus.default_corpus_documents("validation")]
  data = list(ex.examples_from_documents(docs))[:args.examples]
  nbytes = sum(len(x) for x in data)
  methods = [
      acc.EqualInfoACCompressor(model, 16, 16, name_prefix="static_equal_info_ac"),
      acc.EqualInfoACCompressor(model, 16, 16, "paper", name_prefix="static_equal_info_ac"),
      acc.EqualInfoACCompressor(model, 128, 16, name_prefix="static_equal_info_ac"),
      acc.ArithmeticCodingCompressor(model, 16, "static_ac"),
  ]
  print(f"{nbytes:,} bytes in {len(data)} examples; model: static unigram (one lookup/symbol)")
  print(f"{'method':40s} {'encode B/s':>12s} {'decode B/s':>12s}")
  for method in methods:
    t0 = time.perf_counter()
    encoded = [method.encode(x) for x in data]
    t1 = time.perf_counter()
    for e in encoded:
      method.decode(e.tokens)
    t2 = time.perf_counter()
    print(f"{method.name:40s} {nbytes / (t1 - t0):12,.0f} {nbytes / (t2 - t1):12,.0f}")


if __name__ == "__main__":
  main()
