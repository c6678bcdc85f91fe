"""The decoder-only Transformer's hyperparameters, over any token vocabulary (M1's and M2's).

Framework-free (no JAX import) so that numpy-only workers can read a checkpoint's config.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

from neural_compression import symbols as sym


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Hyperparameters of the decoder-only Transformer (see model.py for the math).

  Attributes:
    num_layers: Transformer blocks.
    d_model: residual stream width.
    num_heads: attention heads per block.
    head_dim: width of each head's queries, keys and values.
    mlp_dim: hidden width of the ReLU feed-forward layer.
    num_buckets: relative-position buckets of the T5-style attention bias (causal: all buckets
      cover distances >= 0).
    max_distance: distance (in tokens) from which all larger distances share the last bucket.
    vocab_size: input and output alphabet, in tokens: for M1 the 256 bytes, EOS and PAD
      (symbols.M1_VOCAB_SIZE); for M2 a method's token vocabulary plus its special ids.
    dropout_rate: kept at 0 (the paper's M1 trains on plenty of data; determinism is simpler).
    layer_norm_epsilon: added to the variance inside every LayerNorm.
  """
  num_layers: int = 3
  d_model: int = 256
  num_heads: int = 4
  head_dim: int = 64
  mlp_dim: int = 1024
  num_buckets: int = 32
  max_distance: int = 128
  vocab_size: int = sym.M1_VOCAB_SIZE
  dropout_rate: float = 0.0
  layer_norm_epsilon: float = 1e-6

  def __post_init__(self):
    for name in ("num_layers", "d_model", "num_heads", "head_dim", "mlp_dim", "num_buckets",
                 "max_distance", "vocab_size"):
      if getattr(self, name) < 1:
        raise ValueError(f"{type(self).__name__}.{name} must be positive, got "
                         f"{getattr(self, name)}")
    if self.dropout_rate != 0.0:
      raise ValueError("the model has no dropout (dropout_rate must be 0)")
    if self.num_buckets < 2 or self.max_distance < self.num_buckets:
      raise ValueError("need num_buckets >= 2 and max_distance >= num_buckets, got "
                       f"{self.num_buckets}, {self.max_distance}")

  def non_embedding_params(self) -> int:
    """Parameters outside the embedding and output layers (the paper's size convention)."""
    attn = 4 * self.d_model * self.num_heads * self.head_dim
    mlp = 2 * self.d_model * self.mlp_dim + self.mlp_dim + self.d_model
    norms = 4 * self.d_model
    bias = self.num_buckets * self.num_heads
    return self.num_layers * (attn + mlp + norms + bias) + 2 * self.d_model

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, d: dict[str, Any]):
    """Builds a config from to_dict()'s output; raises ValueError on unknown keys."""
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - fields
    if unknown:
      raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    return cls(**d)

  @classmethod
  def from_json(cls, text: str):
    return cls.from_dict(json.loads(text))

  def with_vocab(self, vocab_size: int) -> "TransformerConfig":
    """The same architecture over another vocabulary (tokens), e.g. an M2 of a named size."""
    fields = {**self.to_dict(), "vocab_size": vocab_size}
    return TransformerConfig(**fields)
