"""Compression ratios of every method on the default corpus's validation split, beside the
paper's figures (paper_facts.md), plus the closing-rule comparison for equal-info windows.

  python experiments/compression_table.py [--m1_checkpoint m1_checkpoint] [--no_m1]
      [--examples N] [--json out.json]

Token compression ratio = input bytes / output tokens; bit compression ratio = input bits /
output bits (tokens * log2 v; Bytes counts 8 bits). Inputs are 10,240-byte examples of runs of
128 documents (EOS after each), as in the paper and the Beam job. Static models (unigram,
SentencePiece) are estimated on the train split only.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from neural_compression import arithmetic_compressors as acc
from neural_compression import corpus
from neural_compression import equal_info_windows as eiw
from neural_compression import examples as ex
from neural_compression import methods
from neural_compression import static_unigram
from neural_compression.baselines import sentencepiece_compressor as spc

# The paper's token compression ratios on C4 validation (v=256 column, v=65k column).
PAPER = {
    "bytes": 1.00, "spm:v32k": 4.28, "ac:v256": 5.49, "ac:v65k": 10.98,
    "static_ac:v256": 1.73, "static_ac:v65k": 3.46, "gzip:v256": 2.23, "gzip:v65k": 4.46,
    "equal_info_ac:b16:v256": 2.66, "equal_info_ac:b16:v65k": 5.31,
    "equal_info_ac:b32:v256": 3.49, "equal_info_ac:b32:v65k": 6.97,
    "equal_info_ac:b64:v256": 4.16, "equal_info_ac:b64:v65k": 8.33,
    "equal_info_ac:b128:v256": 4.61, "equal_info_ac:b128:v65k": 9.22,
}


def window_decode_rate(compressor, encoded_windows, data) -> float:
  """Share of windows whose own b bits decode to exactly their symbols under the rule."""
  ok = total = 0
  for x, windows in zip(data, encoded_windows):
    start = 0
    for w in windows:
      try:
        got = eiw.decode_window(w.code, compressor.model, compressor.window_bits, compressor.rule)
        ok += int(np.array_equal(got, x[start:start + w.num_symbols]))
      except eiw.DecodeError:
        pass
      total += 1
      start += w.num_symbols
  return ok / max(total, 1)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--m1_checkpoint", default="m1_checkpoint")
  parser.add_argument("--no_m1", action="store_true", help="skip the methods that need M1")
  parser.add_argument("--examples", type=int, default=0, help="first N examples (0: all)")
  parser.add_argument("--json", default=None, help="also write the figures here")
  parser.add_argument("--only", default=None,
                      help="comma-separated method strings to run (default: all of them)")
  args = parser.parse_args()
  train = list(corpus.default_corpus_documents("train"))
  docs = [d["text"] for d in corpus.default_corpus_documents("validation")]
  data = list(ex.examples_from_documents(docs))
  if args.examples:
    data = data[:args.examples]
  nbytes = sum(len(x) for x in data)
  unigram = static_unigram.StaticUnigramModel.estimate(train)
  spm_proto = spc.train_sentencepiece([d["text"] for d in train], 32000)
  m1 = None
  if not args.no_m1:
    from neural_compression.m1 import exact_engine
    m1 = exact_engine.load_exact_model(args.m1_checkpoint)
  names = list(PAPER)
  names += [f"static_equal_info_ac:b{b}:v65k" for b in (16, 32, 64, 128)]
  names += [f"static_equal_info_ac:b{b}:v65k:paper" for b in (16, 32, 64, 128)]
  names += [f"equal_info_ac:b{b}:v65k:paper" for b in (16, 32, 64, 128)]
  if args.only:
    names = args.only.split(",")
  rows = {}
  print(f"validation: {nbytes:,} bytes in {len(data)} examples")
  print(f"{'method':36s} {'tok ratio':>9s} {'bit ratio':>9s} {'paper tok':>9s} {'windows':>8s} "
        f"{'win decode':>10s} {'s':>6s}")
  for name in names:
    spec = methods.parse_method(name)
    if spec.uses_m1 and m1 is None:
      continue
    c = methods.build_compressor(spec, m1_model=m1, unigram_model=unigram,
                                 spm_model_proto=spm_proto)
    start = time.perf_counter()
    if spec.is_windowed:
      states = [eiw.EqualInfoEncoderState(x, spec.window_bits, c.model.precision_bits, spec.rule)
                for x in data]
      acc.drive_states(c.model, states)
      windows = [s.windows for s in states]
      encoded = [c.windows_to_encoded(w) for w in windows]
    else:
      encoded = c.encode_batch(data)
    seconds = time.perf_counter() - start
    tokens = sum(len(e.tokens) for e in encoded)
    row = {"token_ratio": nbytes / tokens, "bit_ratio": 8 * nbytes / (tokens * c.bits_per_token),
           "paper_token_ratio": PAPER.get(name), "seconds": round(seconds, 1)}
    if spec.is_windowed:
      row["windows"] = sum(e.num_windows for e in encoded)
      row["window_decode_rate"] = window_decode_rate(c, windows, data)
      row["backoffs"] = sum(w.backed_off > 0 for ws in windows for w in ws)
    rows[name] = row
    paper = f"{row['paper_token_ratio']:.2f}" if row["paper_token_ratio"] else "-"
    decode_rate = f"{row['window_decode_rate']:.2%}" if "window_decode_rate" in row else ""
    print(f"{name:36s} {row['token_ratio']:9.3f} {row['bit_ratio']:9.3f} {paper:>9s} "
          f"{row.get('windows', ''):>8} "
          f"{decode_rate:>10s} "
          f"{seconds:6.1f}", flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"bytes": nbytes, "examples": len(data), "rows": rows}, f, indent=1)


if __name__ == "__main__":
  main()
