"""Coder throughput with a cheap model (static unigram): compiled coder beside the reference.

Prints encode and decode bytes/s for each arithmetic-coding method on validation examples of the
default corpus, the compiled coder (target: >= 10 MB/s encode and decode for StaticAC and
EqualInfoAC b=16 and b=128) beside the pure-Python reference coder on a subset of the same
examples, in one run; the core-hours to code the paper's 524 GB per method at these rates; and
the compiled kernels' first-call cost in a fresh process with an empty numba cache (compiling)
and with the cache this run filled (loading). The model costs one array lookup per symbol
here, so these figures are the coder's ceiling; compare them with the M1 engine's throughput.

Usage: python benchmarks/coder_benchmark.py [--examples 32] [--reference_examples 1]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from neural_compression.methods import arithmetic as acc
from neural_compression import corpus
from neural_compression import examples as ex
from neural_compression.methods import static_unigram

PAPER_CORPUS_BYTES = 524e9
TARGET = 10e6  # bytes/s
FIRST_CALL = """
import time
start = time.perf_counter()
import numpy as np
from neural_compression.methods import arithmetic as acc
from neural_compression.coding import cdf_models
model = cdf_models.FixedCdfModel(None, 14)
for c in (acc.EqualInfoACCompressor(model, 16, 16), acc.ArithmeticCodingCompressor(model, 16)):
  c.decode(c.encode(np.arange(100, dtype=np.uint16)).tokens)
print(time.perf_counter() - start)
"""


def rates(method, data):
  """(encode bytes/s, decode bytes/s, encodings, decodings)."""
  t0 = time.perf_counter()
  encoded = method.encode_batch(data)
  t1 = time.perf_counter()
  decoded = [method.decode(e.tokens) for e in encoded]  # the paper rule may decode wrongly
  t2 = time.perf_counter()
  nbytes = sum(len(x) for x in data)
  return nbytes / (t1 - t0), nbytes / (t2 - t1), encoded, decoded


def first_call_seconds(cache_dir: str) -> float:
  env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
  out = subprocess.run([sys.executable, "-c", FIRST_CALL], env=env, check=True,
                       capture_output=True, text=True)
  return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--examples", type=int, default=32, help="10,240-byte validation examples")
  parser.add_argument("--reference_examples", type=int, default=1)
  parser.add_argument("--skip_first_call", action="store_true")
  args = parser.parse_args()
  model = static_unigram.StaticUnigramModel.estimate(corpus.default_corpus_documents("train"))
  docs = [d["text"] for d in corpus.default_corpus_documents("validation")]
  data = list(ex.examples_from_documents(docs))[:args.examples]
  ref_data = data[:args.reference_examples]
  nbytes = sum(len(x) for x in data)
  methods = [
      ("static_equal_info_ac", dict(window_bits=16, token_bits=16)),
      ("static_equal_info_ac", dict(window_bits=16, token_bits=16, rule="paper")),
      ("static_equal_info_ac", dict(window_bits=128, token_bits=16)),
      ("static_ac", dict(token_bits=16)),
  ]
  print(f"{nbytes:,} bytes in {len(data)} examples (reference coder: the first "
        f"{len(ref_data)}); model: static unigram (one lookup/symbol)")
  print(f"{'method':34s} {'encode B/s':>12s} {'decode B/s':>12s} {'ref enc B/s':>12s} "
        f"{'ref dec B/s':>12s} {'speedup':>8s}  target >= 10 MB/s  core-h/524GB")
  for prefix, kw in methods:
    make = (lambda coder: acc.EqualInfoACCompressor(model, name_prefix=prefix, coder=coder, **kw)
            if "window_bits" in kw else
            acc.ArithmeticCodingCompressor(model, kw["token_bits"], prefix, coder=coder))
    compiled, reference = make("compiled"), make("reference")
    rates(compiled, data[:1])  # warm: kernels loaded
    enc, dec, encoded, decoded = rates(compiled, data)
    ref_enc, ref_dec, ref_encoded, ref_decoded = rates(reference, ref_data)
    assert all(np.array_equal(a.tokens, b.tokens) for a, b in zip(encoded, ref_encoded))
    assert all(np.array_equal(a, b) for a, b in zip(decoded, ref_decoded))
    ok = "meets" if min(enc, dec) >= TARGET else "BELOW"
    hours = PAPER_CORPUS_BYTES / enc / 3600
    print(f"{compiled.name:34s} {enc:12,.0f} {dec:12,.0f} {ref_enc:12,.0f} {ref_dec:12,.0f} "
          f"{enc / ref_enc:7.0f}x  {ok:17s}  {hours:10,.1f}")
  if not args.skip_first_call:
    with tempfile.TemporaryDirectory() as cache:
      compile_s = first_call_seconds(cache)
      load_s = first_call_seconds(cache)
    print(f"first call of the compiled coder in a fresh process: {compile_s:.1f} s with an empty "
          f"numba cache (compiling), {load_s:.1f} s with the cache filled (cache=True: once per "
          "worker machine)")


if __name__ == "__main__":
  main()
