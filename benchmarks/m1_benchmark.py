"""M1 against the classic compressors, on the same validation bytes, in one run.

  python benchmarks/m1_benchmark.py [--checkpoint m1_checkpoint] [--examples 32]

Prints bits/byte of:
  * AC with M1 through the exact engine, full context (no resets, attention over the
    checkpoint's training context, 512 positions for the shipped M1, as the job runs it), on
    10,240-byte validation examples: bits the coder actually wrote / bytes;
  * the float model and the exact model on the same first 1,024 bytes of each example (model
    bits, -log2 p), both attending to every earlier position, so the exact path's cost is
    measured on identical contexts;
  * the first 16 bytes after a reset (what every equal-info window sees), float and exact;
  * xz -9e and bzip2 -9 on the same bytes, compressed at once;
  * the model card's own figures (the trainer's float evaluation, JAX) recomputed from the
    checkpoint beside the values the card states (skip with --no_card).
"""
from __future__ import annotations

import argparse
import bz2
import json
import lzma
import pathlib
import time

import numpy as np

from neural_compression.methods import arithmetic as acc
from neural_compression import corpus
from neural_compression import examples as ex
from neural_compression import symbols as sym
from neural_compression.m1 import engine as exact_engine
from neural_compression.transformer import numpy_inference as ni


def exact_bits(model, rows: list[np.ndarray]) -> np.ndarray:
  """-log2 p of every symbol under the exact CDFs, rows of equal length, [rows, length]."""
  length = len(rows[0])
  session = model.lockstep(len(rows))
  out = np.zeros((len(rows), length))
  tokens = None  # BOS for every row first
  for i in range(length):
    cdfs = session.step(tokens)
    symbols = np.array([r[i] for r in rows])
    freq = cdfs[np.arange(len(rows)), symbols + 1] - cdfs[np.arange(len(rows)), symbols]
    out[:, i] = exact_engine.PRECISION_BITS - np.log2(freq)
    tokens = symbols.astype(np.int64)
  return out


def float_bits(model, rows: list[np.ndarray]) -> np.ndarray:
  return np.stack([model.sequence_bits(r) for r in rows])


def card_figures(checkpoint: str) -> None:
  """Recomputes the card's validation figures with the trainer's evaluator and prints both."""
  from neural_compression.m1 import data as m1_data
  from neural_compression.m1 import evaluator as m1_evaluator
  from neural_compression.m1 import train as m1_train
  from neural_compression.transformer import model as transformer_model
  card = json.loads((pathlib.Path(checkpoint) / "config.json").read_text())["metadata"]
  config, flat, _ = ni.load_checkpoint(checkpoint)
  params = transformer_model.unflatten_params(flat)
  evaluator = m1_evaluator.Evaluator(
      config, m1_data.default_corpus_examples("validation").examples,
      m1_train.TrainArgs.reset_eval_segments)
  # The card records how many validation bytes its full-context figure covers; the trainer
  # picks evenly spaced examples, so find the example count that covers exactly those bytes.
  card_bytes = int(str(card["validation_bytes_evaluated"]).split()[0])
  lengths = np.array([len(e) for e in evaluator.examples])
  count = -1
  for n in range(1, len(lengths)):
    idx = np.linspace(0, len(lengths) - 1, n).round().astype(int)
    if lengths[idx].sum() == card_bytes:
      count = n
      break
  full, nbytes = evaluator.full_context(params, count)
  reset = evaluator.after_reset(params)
  print(f"model card (trainer's float evaluation, step {card['steps']}):")
  for name, value, stated in [
      (f"full context over {nbytes:,} validation bytes", full,
       card["validation_bits_per_byte_full_context"]),
      ("first 16 bytes after a reset", reset,
       card["validation_bits_per_byte_first16_after_reset"])]:
    verdict = "reproduced" if abs(round(value, 4) - stated) <= 2e-4 else "DIFFERS"
    print(f"  {name}: {value:.4f} bits/byte (card {stated}) {verdict}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--checkpoint", default="m1_checkpoint")
  parser.add_argument("--examples", type=int, default=32, help="validation examples (0: all)")
  parser.add_argument("--no_card", action="store_true",
                      help="skip recomputing the model card's figures (needs JAX)")
  args = parser.parse_args()
  if not args.no_card:
    card_figures(args.checkpoint)
  docs = [d["text"] for d in corpus.default_corpus_documents("validation")]
  data = list(ex.examples_from_documents(docs))
  data = [x for x in data if len(x) == ex.EXAMPLE_SYMBOLS][:args.examples or None]
  nbytes = sum(len(x) for x in data)
  raw = b"".join(sym.symbols_to_escaped_bytes(x) for x in data)
  print(f"{nbytes:,} bytes in {len(data)} full validation examples of {ex.EXAMPLE_SYMBOLS:,}")
  model = exact_engine.load_exact_model(args.checkpoint)
  float_model = ni.load_model(args.checkpoint)
  start = time.perf_counter()
  encoded = acc.ArithmeticCodingCompressor(model, 16).encode_batch(data)
  seconds = time.perf_counter() - start
  ac_bits = sum(e.num_bits - acc.LENGTH_HEADER_BITS for e in encoded)
  print(f"AC with M1 (exact, full context), coder bits: {ac_bits / nbytes:.3f} bits/byte "
        f"({nbytes / seconds:,.0f} bytes/s)")
  heads = [x[:1024] for x in data]
  # The float model attends to every earlier position: so must the exact one compared with it.
  full_window = exact_engine.load_exact_model(args.checkpoint, max_context=1 + 1024)
  fb, eb = float_bits(float_model, heads), exact_bits(full_window, heads)
  print(f"first 1,024 bytes of each example, model bits: float {fb.mean():.3f}, exact "
        f"{eb.mean():.3f} bits/byte (exact costs {100 * (eb.mean() / fb.mean() - 1):+.2f}%)")
  print(f"first 16 bytes after a reset: float {fb[:, :16].mean():.3f}, exact "
        f"{eb[:, :16].mean():.3f} bits/byte")
  xz = len(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME)) * 8 / nbytes
  bz = len(bz2.compress(raw, compresslevel=9)) * 8 / nbytes
  print(f"xz -9e: {xz:.3f} bits/byte; bzip2 -9: {bz:.3f} bits/byte (same bytes, at once)")


if __name__ == "__main__":
  main()
