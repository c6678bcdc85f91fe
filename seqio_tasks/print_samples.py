"""Prints M2 samples (T5X predict output of seqio_tasks/gin/runs/m2_sample.gin) as text.

  python -m seqio_tasks.print_samples --method=equal_info_ac:b16:v65k \\
    --predictions='INFER_OUTPUT_DIR/*.jsonl*'

One JSON line per sample (seqio_tasks.sampling.Sample: example_id, prompt_text, text, tokens,
decodes) on stdout, then "<k> of <n> samples decode" on stderr. The run's artifacts (and M1 for
M1 methods) come from the data directory as for the tasks: --data_dir, else $NCC_DATA_DIR
(and --m1_checkpoint, else $NCC_M1_CHECKPOINT, else the shipped M1).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Sequence

from neural_compression import methods
from seqio_tasks import data
from seqio_tasks import sampling
from seqio_tasks import vocabularies


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--method", required=True, help="the task's method, e.g. bytes")
  parser.add_argument("--predictions", required=True, help="glob of T5X's predict output")
  parser.add_argument("--data_dir", default=None,
                      help="the run whose artifacts decode (default $NCC_DATA_DIR or ./output)")
  parser.add_argument("--m1_checkpoint", default=None,
                      help="M1 methods: the run's M1 (default $NCC_M1_CHECKPOINT, else shipped)")
  args = parser.parse_args(argv)
  # Resolved once, here: the vocabulary is then the one of this run (and this M1).
  spec = methods.parse_method(args.method)
  m1_checkpoint = (args.m1_checkpoint or data.default_m1_checkpoint()) if spec.uses_m1 else None
  vocab = vocabularies.vocabulary_for(spec.name, data_dir=args.data_dir or data.get_data_dir(),
                                      m1_checkpoint=m1_checkpoint)
  samples = sampling.decode_predictions(vocab, args.predictions)
  for s in samples:
    print(json.dumps(dataclasses.asdict(s), ensure_ascii=False))
  decoded = sum(s.decodes for s in samples)
  print(f"{decoded} of {len(samples)} samples decode", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
