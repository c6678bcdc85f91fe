"""Small M1 checkpoints for engine tests: random float weights, exported to the exact model."""
from __future__ import annotations

import pathlib

import numpy as np

from neural_compression.m1 import exact_quantization as eq
from neural_compression.m1 import numpy_inference as ni
from neural_compression.m1.config import M1Config
from tests import pipeline_test_corpus as corpus_gen

SMALL = M1Config(num_layers=2, d_model=32, num_heads=2, head_dim=16, mlp_dim=64, num_buckets=8,
                 max_distance=16)


def make_checkpoint(directory: pathlib.Path, config: M1Config = SMALL, seed: int = 0,
                    scale: float = 0.3, context_length: int | None = None) -> pathlib.Path:
  """Writes a random float checkpoint plus its exact export into `directory`; context_length:
  the training context (symbols) it records, if any."""
  rng = np.random.default_rng(seed)
  params = {n: (rng.standard_normal(s) * scale).astype(np.float32)
            for n, s in ni.param_shapes(config).items()}
  for name in params:
    if name.endswith("norm/scale"):
      params[name] = (1 + 0.1 * params[name]).astype(np.float32)
  ni.save_checkpoint(directory, config, params, context_length=context_length)
  texts = [d["text"].encode() for d in corpus_gen.make_documents(8, seed=seed)]
  eq.export_checkpoint(directory, texts)
  return directory


def validation_contexts(count: int, seed: int = 1) -> list[np.ndarray]:
  """Window prefixes of many lengths (0..40 symbols) cut from generated text."""
  data = " ".join(d["text"] for d in corpus_gen.make_documents(4, seed=seed)).encode()
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(count):
    start = int(rng.integers(0, len(data) - 50))
    out.append(np.frombuffer(data[start:start + int(rng.integers(0, 41))], np.uint8).astype(
        np.uint16))
  return out
