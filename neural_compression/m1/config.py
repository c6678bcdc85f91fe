"""M1's configuration: the Transformer over the byte model's symbols, and the named sizes.

Framework-free (no JAX import) so that numpy-only workers can read a checkpoint's config.
TransformerConfig (neural_compression.transformer.config) is the architecture over any vocabulary
(M2 trains it on a method's tokens); M1Config pins the vocabulary to the byte model's symbols.
"""
from __future__ import annotations

import dataclasses

from neural_compression import symbols as sym
from neural_compression.transformer.config import TransformerConfig

__all__ = ["TransformerConfig", "M1Config", "SIZES", "DEFAULT_SIZE", "config_for_size"]


@dataclasses.dataclass(frozen=True)
class M1Config(TransformerConfig):
  """TransformerConfig whose vocabulary is the byte model's symbols (symbols.M1_VOCAB_SIZE)."""

  def __post_init__(self):
    super().__post_init__()
    if self.vocab_size != sym.M1_VOCAB_SIZE:
      raise ValueError(f"M1 predicts the {sym.M1_VOCAB_SIZE} symbols of symbols.py, "
                       f"got vocab_size={self.vocab_size}")


# The paper's M1 is "3m"; the others are the paper's M2 sizes (Table 4), for completeness and for
# GPU/TPU runs. "1m" and "tiny" are ours: "1m" (1.3M non-embedding parameters, ~1.8x fewer FLOPs
# per byte than 3m) is near compute-optimal for ~1e14 training FLOPs, i.e. about 1.5 hours of a
# shared 2-core CPU, where 3m would see too few bytes; "tiny" is for tests.
SIZES: dict[str, M1Config] = {
    "tiny": M1Config(num_layers=2, d_model=32, num_heads=2, head_dim=16, mlp_dim=64,
                     num_buckets=8, max_distance=16),
    "1m": M1Config(num_layers=3, d_model=192, num_heads=3, head_dim=64, mlp_dim=768),
    "3m": M1Config(),
    "25m": M1Config(num_layers=6, d_model=512, num_heads=8, head_dim=64, mlp_dim=2048),
    "113m": M1Config(num_layers=12, d_model=768, num_heads=12, head_dim=64, mlp_dim=3072),
    "403m": M1Config(num_layers=24, d_model=1024, num_heads=16, head_dim=64, mlp_dim=4096),
    "2b": M1Config(num_layers=24, d_model=2048, num_heads=32, head_dim=64, mlp_dim=8192),
}
DEFAULT_SIZE = "3m"


def config_for_size(size: str) -> M1Config:
  """Returns the named size's config; raises ValueError listing the known sizes."""
  if size not in SIZES:
    raise ValueError(f"unknown M1 size {size!r}; known: {sorted(SIZES)}")
  return SIZES[size]
