"""StaticAC's model: a static symbol-unigram distribution estimated on the training split.

Saved as a versioned JSON artifact holding the raw integer counts; the CDF is derived from them
with integer arithmetic (`cdf_models.counts_to_cdf`), so the artifact decodes identically on every
platform. Estimate it only on training documents: the validation split must stay unseen.
"""
from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Iterable

import numpy as np

from neural_compression.coding import cdf_models
from neural_compression import symbols as sym
from neural_compression.methods import PRECISION_BITS

ARTIFACT_FORMAT = "neural_compression.static_unigram"
ARTIFACT_VERSION = 1


class StaticUnigramModel(cdf_models.FixedCdfModel):
  """A context-free model whose CDF is the quantized unigram distribution of `counts`."""

  def __init__(self, counts: np.ndarray, precision_bits: int = PRECISION_BITS, source: str = ""):
    counts = np.asarray(counts, dtype=np.int64)
    super().__init__(cdf_models.counts_to_cdf(counts, precision_bits), precision_bits)
    self.counts = counts
    self.source = source

  @classmethod
  def estimate(cls, documents: Iterable[dict | bytes | str], precision_bits: int = PRECISION_BITS,
               source: str = "") -> "StaticUnigramModel":
    """Counts symbols over documents (each followed by one EOS, as in the pipeline's runs)."""
    counts = np.zeros(sym.NUM_SYMBOLS, np.int64)
    for doc in documents:
      text = doc["text"] if isinstance(doc, dict) else doc
      data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
      counts[:256] += np.bincount(np.frombuffer(data, np.uint8), minlength=256)
      counts[sym.EOS] += 1
    return cls(counts, precision_bits, source)

  def to_json(self) -> str:
    """Serializes the artifact (format, version, precision, counts, CDF checksum)."""
    return json.dumps({
        "format": ARTIFACT_FORMAT,
        "version": ARTIFACT_VERSION,
        "precision_bits": self.precision_bits,
        "source": self.source,
        "counts": [int(c) for c in self.counts],
        "cdf_sha256": hashlib.sha256(self.cdf(None).tobytes()).hexdigest(),
    }, indent=1)

  @classmethod
  def from_json(cls, text: str) -> "StaticUnigramModel":
    """Loads an artifact; raises ValueError on a wrong format, version or checksum."""
    obj = json.loads(text)
    if obj.get("format") != ARTIFACT_FORMAT or obj.get("version") != ARTIFACT_VERSION:
      raise ValueError(f"not a {ARTIFACT_FORMAT} v{ARTIFACT_VERSION} artifact: "
                       f"{obj.get('format')} v{obj.get('version')}")
    model = cls(np.asarray(obj["counts"], np.int64), obj["precision_bits"], obj.get("source", ""))
    if hashlib.sha256(model.cdf(None).tobytes()).hexdigest() != obj["cdf_sha256"]:
      raise ValueError("static unigram artifact checksum mismatch: the file is corrupt")
    return model

  def save(self, path: str | pathlib.Path) -> None:
    pathlib.Path(path).write_text(self.to_json())

  @classmethod
  def load(cls, path: str | pathlib.Path) -> "StaticUnigramModel":
    return cls.from_json(pathlib.Path(path).read_text())
