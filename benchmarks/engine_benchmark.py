"""Exact M1 engine throughput, side by side in one run (issue targets: >= 30,000 bytes/s for
EqualInfoAC[b=16] compression, peak memory < 2 GB, with the naive FLOP bound printed beside).

  python benchmarks/engine_benchmark.py [--checkpoint m1_checkpoint] [--examples 24] [--rows 256]

Prints: the sgemm FLOP/s measured now; M1's FLOPs per byte if every byte ran a full forward
position; the naive bound (sgemm FLOP/s / FLOPs per byte); the measured EqualInfoAC[b=16, v=65k]
encode throughput through the batched engine with the prefix cache; cache hit rate; peak RSS;
decode throughput at batch 1 (the SeqIO vocabulary's path); and the coder alone with a static
unigram model on the same bytes, to show the coder's share.
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from neural_compression import arithmetic_compressors as acc
from neural_compression import corpus
from neural_compression import examples as ex
from neural_compression import static_unigram
from neural_compression.m1 import engine as exact_engine


def sgemm_flops_per_second(n: int = 512, repeats: int = 20) -> float:
  a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
  a @ a
  start = time.perf_counter()
  for _ in range(repeats):
    a @ a
  return 2 * n ** 3 * repeats / (time.perf_counter() - start)


def m1_flops_per_position(config) -> float:
  d, f, hk = config.d_model, config.mlp_dim, config.num_heads * config.head_dim
  per_layer = 2 * (3 * d * hk + hk * d + 2 * d * f)
  return config.num_layers * per_layer + 2 * d * 257


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--checkpoint", default="m1_checkpoint")
  parser.add_argument("--examples", type=int, default=512,
                      help="10,240-byte examples (validation first, then train)")
  parser.add_argument("--rows", type=int, default=512,
                      help="examples encoded together (one engine row each)")
  parser.add_argument("--backend", default="numpy")
  args = parser.parse_args()
  # Validation examples first; throughput runs that need more rows continue into train text.
  data = []
  for split in ("validation", "train"):
    docs = [d["text"] for d in corpus.default_corpus_documents(split)]
    data += list(ex.examples_from_documents(docs))
  data = data[:args.examples]
  nbytes = sum(len(x) for x in data)
  model = exact_engine.load_exact_model(args.checkpoint, backend=args.backend)
  flops = m1_flops_per_position(model.engine.config)
  sgemm = sgemm_flops_per_second()
  print(f"data: {nbytes:,} bytes in {len(data)} examples")
  print(f"sgemm now: {sgemm / 1e9:.1f} GFLOP/s; M1 {flops / 1e6:.2f} MFLOP per byte position")
  print(f"naive FLOP bound (one full position per byte): {sgemm / flops:,.0f} bytes/s")
  compressor = acc.EqualInfoACCompressor(model, 16, 16)
  start = time.perf_counter()
  encoded = []
  for i in range(0, len(data), args.rows):
    encoded += compressor.encode_batch(data[i:i + args.rows])
  seconds = time.perf_counter() - start
  s = model.stats
  hits = s["hits"] / max(s["hits"] + s["computed"], 1)
  print(f"EqualInfoAC[b=16,v=65k] encode: {nbytes / seconds:,.0f} bytes/s "
        f"({s['computed']:,} positions computed, cache hit rate {hits:.1%}, "
        f"{sum(len(e.tokens) for e in encoded):,} tokens)")
  start = time.perf_counter()
  decoded = 0
  for e in encoded[:3]:
    decoded += len(acc.EqualInfoACCompressor(model, 16, 16).decode(e.tokens))
  print(f"decode at batch 1 (one example at a time): "
        f"{decoded / (time.perf_counter() - start):,.0f} bytes/s")
  unigram = static_unigram.StaticUnigramModel.estimate(corpus.default_corpus_documents("train"))
  start = time.perf_counter()
  acc.EqualInfoACCompressor(unigram, 16, 16).encode_batch(data)
  print(f"coder alone (static unigram model, same bytes): "
        f"{nbytes / (time.perf_counter() - start):,.0f} bytes/s")
  print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")


if __name__ == "__main__":
  main()
