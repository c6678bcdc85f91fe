"""M1's validation figures: bits/byte at full context and right after a reset (imports JAX).

Bits/byte counts EOS as a byte (examples.py's convention) and renormalizes over the 257 coder
symbols (PAD is never coded): what the arithmetic coder would pay, before CDF quantization.
Full context: each validation example (10,240 symbols of a run of 128 documents) is coded from an
empty context with no resets. After reset: the mean over the first 16 symbols of segments that
start at arbitrary offsets of the validation stream with no left context (as every equal-info
window does).
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from neural_compression import symbols as sym
from neural_compression.m1 import config as m1_config
from neural_compression.transformer import model as transformer_model
from neural_compression.transformer import numpy_inference as ni

LN2 = math.log(2.0)


def coder_bits(logits, targets):
  """-log2 p(target) with p renormalized over the NUM_SYMBOLS coder symbols; [B, L] float32."""
  logp = jax.nn.log_softmax(logits[..., :sym.NUM_SYMBOLS].astype(jnp.float32), axis=-1)
  safe = jnp.minimum(targets, sym.NUM_SYMBOLS - 1)
  return -jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0] / LN2


@functools.lru_cache(maxsize=8)
def bits_fn(config: m1_config.M1Config):
  """Jitted (params, symbols [B, N]) -> coder bits [B, N], each row coded from an empty context."""
  model = transformer_model.DecoderTransformer(config)

  @jax.jit
  def fn(params, symbols):
    bos = jnp.full(symbols.shape[:1] + (1,), ni.BOS, symbols.dtype)
    inputs = jnp.concatenate([bos, symbols[:, :-1]], axis=1)
    return coder_bits(model.apply({"params": params}, inputs), symbols)
  return fn


def reset_segments(examples: Sequence[np.ndarray], count: int, length: int,
                   seed: int = 0) -> np.ndarray:
  """`count` segments of `length` symbols at deterministic arbitrary offsets of the examples'
  concatenation, int32 [count, length]."""
  stream = np.concatenate(examples).astype(np.int32)
  starts = np.random.default_rng([seed, 3]).integers(0, len(stream) - length + 1, size=count)
  return np.stack([stream[s:s + length] for s in starts])


class Evaluator:
  """Validation bits/byte of M1 parameters over fixed validation examples."""

  def __init__(self, config: m1_config.M1Config, examples: Sequence[np.ndarray],
               reset_segments_count: int, reset_len: int = 16):
    """examples: validation examples (symbol arrays), e.g. data.read_examples(validation)."""
    if not examples:
      raise ValueError("no validation examples")
    self.examples = [np.asarray(e, np.int32) for e in examples]
    self.reset = (reset_segments(self.examples, reset_segments_count, reset_len)
                  if reset_segments_count else None)
    self._bits = bits_fn(config)
    self.total_bytes = sum(len(e) for e in self.examples)

  def full_context(self, params, num_examples: int) -> tuple[float, int]:
    """(bits/byte, bytes) over num_examples evenly spaced examples (-1: all), one forward each."""
    if num_examples < 0 or num_examples >= len(self.examples):
      chosen = self.examples
    else:
      # Evenly spaced, so that a small periodic sample spans the whole validation split.
      idx = np.linspace(0, len(self.examples) - 1, num_examples).round().astype(int)
      chosen = [self.examples[i] for i in idx]
    bits = 0.0
    count = 0
    for e in chosen:
      bits += float(jnp.sum(self._bits(params, jnp.asarray(e[None]))))
      count += len(e)
    return bits / max(count, 1), count

  def after_reset(self, params) -> float:
    """Mean bits/byte of the first 16 symbols coded from an empty context."""
    if self.reset is None:
      return float("nan")
    return float(jnp.mean(self._bits(params, jnp.asarray(self.reset))))
