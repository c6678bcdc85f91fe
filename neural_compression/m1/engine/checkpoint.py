"""Checks and loads the exact M1 export (exact.npz and its config) next to the float checkpoint."""
from __future__ import annotations

import hashlib
import json
import os
import pathlib

import numpy as np

from neural_compression.m1 import exact_quantization as eq
from neural_compression.m1 import numpy_inference as ni


class ExactCheckpointError(ValueError):
  """The exact model is missing, corrupt or inconsistent with the float checkpoint."""


def verify_checkpoint(directory: str | os.PathLike) -> dict:
  """Checks a checkpoint's float and exact files against their sha256; returns the exact config."""
  directory = pathlib.Path(directory)
  ni.load_checkpoint(directory)  # float weights: files, checksum, shapes
  path = directory / eq.EXACT_CONFIG_FILE
  if not path.is_file():
    raise ExactCheckpointError(
        f"{path} is missing: export the exact model with "
        f"`python -m neural_compression.m1.export_exact --checkpoint={directory}`")
  doc = json.loads(path.read_text())
  if doc.get("format") != eq.EXACT_FORMAT:
    raise ExactCheckpointError(f"{path}: format {doc.get('format')!r}, expected {eq.EXACT_FORMAT}")
  data = (directory / doc["exact_file"]).read_bytes()
  if hashlib.sha256(data).hexdigest() != doc["exact_sha256"]:
    raise ExactCheckpointError(f"{directory / doc['exact_file']}: sha256 mismatch, file corrupt")
  float_doc = json.loads((directory / ni.CONFIG_FILE).read_text())
  if doc.get("float_weights_sha256") != float_doc["weights_sha256"]:
    raise ExactCheckpointError(
        f"{path} was exported from other float weights than {directory / ni.WEIGHTS_FILE}: "
        f"re-run `python -m neural_compression.m1.export_exact --checkpoint={directory}`")
  return doc


def context_length(directory: str | os.PathLike, exact_doc: dict | None = None) -> int:
  """The attention window (symbols) the engine uses with this checkpoint: the context it was
  trained on (exact_config.json's, else the float checkpoint's, see
  numpy_inference.training_context_length), else the paper's 1,024."""
  from neural_compression.m1.engine.integer_forward import PAPER_CONTEXT
  if exact_doc is None:
    exact_doc = json.loads((pathlib.Path(directory) / eq.EXACT_CONFIG_FILE).read_text())
  recorded = exact_doc.get("context_length") or ni.training_context_length(directory)
  return int(recorded) if recorded else PAPER_CONTEXT


def load_exact_arrays(directory: str | os.PathLike) -> tuple[dict, dict]:
  """Reads (arrays, scalars) of the exact model after verifying its checksum."""
  directory = pathlib.Path(directory)
  doc = verify_checkpoint(directory)
  with np.load(directory / doc["exact_file"], allow_pickle=False) as z:
    arrays = {name: z[name] for name in z.files}
  return arrays, doc


