"""The determinism matrix on the JAX backend (a GPU when visible) against CPU-made bitstreams.

Run through `benchmarks/gpu_check.sh` (which bounds it to 8 minutes). Steps, each printed with
its verdict:
  1. on the CPU (numpy backend, the reference): CDFs after random validation contexts, and
     EqualInfoAC[b=16, v=65k] encodings of the first validation examples; the compiled CPU
     backend (what a CPU job runs by default) must give the same CDFs at batch 7 and 512 and
     the same bitstreams;
  2. on the JAX backend: the same CDFs at batch 1, 7, 64 and 512 rows in shuffled order, from a
     fresh and from a warm cache; the CPU bitstreams decoded; the same examples re-encoded;
     every CDF, byte and token must be identical;
  3. throughput of the JAX backend: EqualInfoAC encode bytes/s and positions/s computed.
Exit status 0 only if everything matched.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from neural_compression.methods import arithmetic as acc
from neural_compression import corpus
from neural_compression import examples as ex
from neural_compression.m1 import engine


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--checkpoint", default="m1_checkpoint")
  parser.add_argument("--contexts", type=int, default=512)
  parser.add_argument("--examples", type=int, default=16)
  parser.add_argument("--example_bytes", type=int, default=10240)
  args = parser.parse_args()
  import jax
  devices = jax.devices()
  print(f"JAX {jax.__version__} devices: {', '.join(f'{d.platform}:{d.device_kind}' for d in devices)}")
  x64_before = bool(jax.config.jax_enable_x64)
  docs = [d["text"] for d in corpus.default_corpus_documents("validation")]
  text = docs[0].encode()
  rng = np.random.default_rng(0)
  contexts = []
  for _ in range(args.contexts):
    start = int(rng.integers(0, len(text) - 40))
    contexts.append(np.frombuffer(text[start:start + int(rng.integers(0, 33))],
                                  np.uint8).astype(np.uint16))
  examples = [x[:args.example_bytes] for x in ex.examples_from_documents(docs)][:args.examples]
  nbytes = sum(len(x) for x in examples)

  cpu = engine.load_exact_model(args.checkpoint, backend="numpy")
  reference = cpu.cdfs(contexts)
  start = time.perf_counter()
  cpu_encoded = acc.EqualInfoACCompressor(cpu, 16, 16).encode_batch(examples)
  cpu_rate = nbytes / (time.perf_counter() - start)
  print(f"CPU (numpy): {len(contexts)} CDFs, {len(examples)} examples ({nbytes:,} bytes) encoded "
        f"at {cpu_rate:,.0f} bytes/s")

  failures = 0

  def check(what: str, ok: bool) -> None:
    nonlocal failures
    failures += not ok
    print(f"  {'ok  ' if ok else 'FAIL'} {what}")

  for batch in (7, 512):
    model = engine.load_exact_model(args.checkpoint, backend="compiled")
    out = np.concatenate([model.cdfs(contexts[first:first + batch])
                          for first in range(0, len(contexts), batch)])
    check(f"compiled CPU CDFs at batch {batch}: identical to numpy", np.array_equal(out, reference))
  compiled_encoded = acc.EqualInfoACCompressor(engine.load_exact_model(
      args.checkpoint, backend="compiled"), 16, 16).encode_batch(examples)
  check("compiled CPU encodings identical to numpy encodings",
        all(np.array_equal(a.tokens, b.tokens) for a, b in zip(compiled_encoded, cpu_encoded)))

  for batch in (1, 7, 64, 512):
    model = engine.load_exact_model(args.checkpoint, backend="jax")
    order = np.random.default_rng(batch).permutation(len(contexts))
    out = np.zeros_like(reference)
    for first in range(0, len(order), batch):
      rows = order[first:first + batch]
      out[rows] = model.cdfs([contexts[i] for i in rows])
    check(f"JAX CDFs at batch {batch}, shuffled, fresh cache: identical to CPU",
          np.array_equal(out, reference))
    if batch == 512:
      again = model.cdfs(contexts[::-1])[::-1]
      check("JAX CDFs from a warm cache, reversed order: identical", np.array_equal(again, reference))
  model = engine.load_exact_model(args.checkpoint, backend="jax")
  compressor = acc.EqualInfoACCompressor(model, 16, 16)
  decoded = [compressor.decode(e.tokens) for e in cpu_encoded]
  check("CPU bitstreams decode on JAX to the exact bytes",
        all(np.array_equal(d, x) for d, x in zip(decoded, examples)))
  model = engine.load_exact_model(args.checkpoint, backend="jax")
  compressor = acc.EqualInfoACCompressor(model, 16, 16)
  compressor.encode(examples[0][:64])  # compile the common shapes before timing
  computed0 = model.stats["computed"]
  start = time.perf_counter()
  jax_encoded = compressor.encode_batch(examples)
  seconds = time.perf_counter() - start
  check("JAX encodings identical to CPU encodings",
        all(np.array_equal(a.tokens, b.tokens) for a, b in zip(jax_encoded, cpu_encoded)))
  check("jax_enable_x64 as found", bool(jax.config.jax_enable_x64) == x64_before)
  positions = model.stats["computed"] - computed0
  print(f"JAX throughput: EqualInfoAC[b=16,v=65k] encode {nbytes / seconds:,.0f} bytes/s "
        f"({positions / seconds:,.0f} positions/s computed, {positions:,} positions; CPU numpy "
        f"{cpu_rate:,.0f} bytes/s in this run)")
  print("gpu_check: " + ("all identical" if not failures else f"{failures} check(s) FAILED"))
  return 1 if failures else 0


if __name__ == "__main__":
  sys.exit(main())
