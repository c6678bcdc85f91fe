"""Compression ratios and trivial-model bits/byte of every method on the default corpus's
validation split, beside the paper's figures (paper_facts.md: its compression table and Table 3),
plus the closing-rule comparison for equal-info windows.

  python experiments/compression_table.py [--m1_checkpoint m1_checkpoint] [--no_m1]
      [--examples N] [--only m1,m2] [--json out.json]

Token compression ratio = input bytes / output tokens; bit compression ratio = input bits /
output bits (tokens * log2 v; Bytes counts 8 bits). Trivial models (the paper's Table 3):
uniform bits/byte = tokens * log2 v / bytes; unigram bits/byte = tokens * H / bytes, H the
entropy (bits/token) of the method's own token frequencies on these examples (in-sample, as a
lower bound; for v=65k over ~10^5 tokens that bias is about (types - 1) / (2 tokens ln 2)
bits/token, printed as unigram_bias). Inputs are 10,240-byte examples of runs of 128 documents
(EOS after each), as in the paper and the Beam job. Static models (unigram, SentencePiece) are
estimated on the train split only.

Methods that differ only in the token size share one bitstream (the v=65k tokens are the v=256
bitstream re-cut into 16-bit tokens), so M1 codes each bitstream once.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from neural_compression.methods import arithmetic as acc
from neural_compression.coding import bit_tokens
from neural_compression import corpus
from neural_compression.coding import equal_info_windows as eiw
from neural_compression import examples as ex
from neural_compression import methods
from neural_compression.methods import static_unigram
from neural_compression.methods import sentencepiece as spc

# The paper's token compression ratios on C4 validation (v=256 column, v=65k column).
PAPER = {
    "bytes": 1.00, "spm:v32k": 4.28, "ac:v256": 5.49, "ac:v65k": 10.98,
    "static_ac:v256": 1.73, "static_ac:v65k": 3.46, "gzip:v256": 2.23, "gzip:v65k": 4.46,
    "equal_info_ac:b16:v256": 2.66, "equal_info_ac:b16:v65k": 5.31,
    "equal_info_ac:b32:v256": 3.49, "equal_info_ac:b32:v65k": 6.97,
    "equal_info_ac:b64:v256": 4.16, "equal_info_ac:b64:v65k": 8.33,
    "equal_info_ac:b128:v256": 4.61, "equal_info_ac:b128:v65k": 9.22,
}

# The paper's Table 3 (uniform, unigram) bits/byte; EqualInfoAC rows are v=256.
PAPER_TRIVIAL = {
    "bytes": (8.000, 4.602), "spm:v32k": (3.497, 2.443), "ac:v256": (1.457, 1.457),
    "static_ac:v256": (4.624, 4.624), "gzip:v256": (3.587, 3.586),
    "equal_info_ac:b16:v256": (3.008, 2.976), "equal_info_ac:b32:v256": (2.292, 2.285),
    "equal_info_ac:b64:v256": (1.923, 1.921), "equal_info_ac:b128:v256": (1.735, 1.735),
}


def unigram_entropy(encoded) -> tuple[float, int]:
  """(bits per token of the in-sample token unigram, distinct tokens) over all encodings."""
  tokens = np.concatenate([e.tokens for e in encoded]).astype(np.int64)
  counts = np.bincount(tokens)
  p = counts[counts > 0] / len(tokens)
  return float(-(p * np.log2(p)).sum()), int((counts > 0).sum())


def recut(encoded: list, token_bits_from: int, token_bits_to: int) -> list:
  """The same bitstreams (num_bits each) cut into tokens of another size (only .tokens used)."""
  out = []
  for e in encoded:
    bits = bit_tokens.tokens_to_bits(e.tokens, token_bits_from)[:int(e.num_bits)]
    out.append(acc.Encoded(bit_tokens.bits_to_tokens(bits, token_bits_to), e.num_bits,
                           e.num_windows))
  return out


class _WindowCheck:
  """A window's decoder state that records a DecodeError as a wrong window instead of raising,
  so that acc.drive_states can run a whole batch of windows, good and bad together."""

  def __init__(self, code: int, expected: np.ndarray, compressor):
    self.state = eiw.EqualInfoDecoderState(code, compressor.window_bits,
                                           compressor.model.precision_bits, compressor.rule)
    self.expected = expected
    self.failed = False

  @property
  def done(self) -> bool:
    return self.failed or self.state.done

  def context(self) -> np.ndarray:
    return self.state.context()

  def feed(self, cdf) -> None:
    try:
      self.state.feed(cdf)
    except eiw.DecodeError:
      self.failed = True

  def correct(self) -> bool:
    if self.failed:
      return False
    try:
      return bool(np.array_equal(self.state.symbols, self.expected))
    except eiw.DecodeError:
      return False


def window_decode_rate(compressor, encoded_windows, data, rows: int = 512) -> float:
  """Share of windows whose own b bits decode to exactly their symbols under the rule.

  Windows are independent, so they decode `rows` at a time as rows of one batch (the exact M1
  engine gives the same CDFs at any batch size); a window whose decoding fails counts as wrong.
  """
  checks = []
  for x, windows in zip(data, encoded_windows):
    start = 0
    for w in windows:
      checks.append(_WindowCheck(w.code, x[start:start + w.num_symbols], compressor))
      start += w.num_symbols
  for first in range(0, len(checks), rows):
    acc.drive_states(compressor.model, checks[first:first + rows])
  return sum(c.correct() for c in checks) / max(len(checks), 1)


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
    from neural_compression.m1 import engine as exact_engine
    m1 = exact_engine.load_exact_model(args.m1_checkpoint)
  names = list(PAPER)
  names += [f"static_equal_info_ac:b{b}:v65k" for b in (16, 32, 64, 128)]
  names += [f"static_equal_info_ac:b{b}:v65k:paper" for b in (16, 32, 64, 128)]
  names += [f"equal_info_ac:b{b}:v65k:paper" for b in (16, 32, 64, 128)]
  if args.only:
    names = args.only.split(",")
  rows = {}
  print(f"validation: {nbytes:,} bytes in {len(data)} examples")
  print(f"{'method':36s} {'tok ratio':>9s} {'bit ratio':>9s} {'paper tok':>9s} {'uniform':>8s} "
        f"{'unigram':>8s} {'paper u/u':>11s} {'windows':>8s} {'win decode':>10s} {'s':>6s}")
  bitstreams = {}  # (kind, b, rule) -> (token_bits, encoded) or windows: shared across v
  decode_rates = {}  # (kind, b, rule) -> share of windows that decode on their own
  for name in names:
    spec = methods.parse_method(name)
    if spec.uses_m1 and m1 is None:
      continue
    c = methods.build_compressor(spec, m1_model=m1, unigram_model=unigram,
                                 spm_model_proto=spm_proto)
    start = time.perf_counter()
    key = (spec.kind, spec.window_bits, spec.rule)
    if spec.is_windowed:
      if key not in bitstreams:
        states = [eiw.EqualInfoEncoderState(x, spec.window_bits, c.model.precision_bits,
                                            spec.rule) for x in data]
        acc.drive_states(c.model, states)
        bitstreams[key] = [s.windows for s in states]
      windows = bitstreams[key]
      encoded = [c.windows_to_encoded(w) for w in windows]
    elif spec.uses_m1 and key in bitstreams:
      encoded = recut(bitstreams[key][1], bitstreams[key][0], spec.token_bits)
      # The shortcut must be what the compressor itself writes: check the first example.
      direct = c.encode_batch(data[:1])[0].tokens
      if not np.array_equal(direct, encoded[0].tokens):
        raise AssertionError(f"{name}: re-cut bitstream differs from the compressor's output")
    else:
      encoded = c.encode_batch(data)
      if spec.uses_m1:
        bitstreams[key] = (spec.token_bits, encoded)
    seconds = time.perf_counter() - start
    tokens = sum(len(e.tokens) for e in encoded)
    entropy, types = unigram_entropy(encoded)
    row = {"token_ratio": nbytes / tokens, "bit_ratio": 8 * nbytes / (tokens * c.bits_per_token),
           "paper_token_ratio": PAPER.get(name), "seconds": round(seconds, 1),
           "uniform_bits_per_byte": tokens * c.bits_per_token / nbytes,
           "unigram_bits_per_byte": tokens * entropy / nbytes,
           "unigram_bias_bits_per_byte": (types - 1) / (2 * np.log(2) * nbytes),
           "paper_uniform_unigram": PAPER_TRIVIAL.get(name)}
    if spec.is_windowed:
      row["windows"] = sum(e.num_windows for e in encoded)
      # Shared windows decode alike at any token size: check them once per bitstream.
      if key not in decode_rates:
        decode_rates[key] = window_decode_rate(c, windows, data)
      row["window_decode_rate"] = decode_rates[key]
      row["backoffs"] = sum(w.backed_off > 0 for ws in windows for w in ws)
    rows[name] = row
    paper = f"{row['paper_token_ratio']:.2f}" if row["paper_token_ratio"] else "-"
    decode_rate = f"{row['window_decode_rate']:.2%}" if "window_decode_rate" in row else ""
    trivial = PAPER_TRIVIAL.get(name)
    trivial = f"{trivial[0]:.3f}/{trivial[1]:.3f}" if trivial else "-"
    print(f"{name:36s} {row['token_ratio']:9.3f} {row['bit_ratio']:9.3f} {paper:>9s} "
          f"{row['uniform_bits_per_byte']:8.3f} {row['unigram_bits_per_byte']:8.3f} "
          f"{trivial:>11s} {row.get('windows', ''):>8} "
          f"{decode_rate:>10s} "
          f"{seconds:6.1f}", flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"bytes": nbytes, "examples": len(data), "rows": rows}, f, indent=1)


if __name__ == "__main__":
  main()
