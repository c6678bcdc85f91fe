"""M1 (and M2) in Flax (linen): a decoder-only Transformer with T5-style relative attention bias.

The math is exactly numpy_inference.NumpyM1's (see its docstring); operations are kept plain
(einsum, LayerNorm, ReLU, softmax, all float32) so that the numpy mirror stays simple.
Parameter paths, joined with '/', are numpy_inference.param_shapes()'s names.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from neural_compression.transformer import numpy_inference
from neural_compression.transformer.config import TransformerConfig

Params = Any


def _normal(stddev: float):
  return nn.initializers.normal(stddev=stddev)


def recency_bias_init(num_buckets: int, num_heads: int) -> np.ndarray:
  """Initial relative-position bias [num_buckets, num_heads]: -bucket * slope_h, float32.

  With a zero init, position reaches attention only through these biases, which Adam moves by
  ~lr per step, so a byte model sits for hundreds of steps on the bigram plateau (~3.4
  bits/byte) before it can attend to recent bytes. ALiBi-style slopes 2^(-8h/H) give head 0 a
  sharply local view and later heads ever longer ones from step 0 (measured: 2.76 vs 3.43
  bits/byte after 150 steps of a 2-layer model). The biases stay learned.
  """
  slopes = 2.0 ** (-8.0 * np.arange(num_heads) / num_heads)
  return (-np.arange(num_buckets)[:, None] * slopes[None, :]).astype(np.float32)


class LayerNorm(nn.Module):
  """LayerNorm over the last axis with scale and bias (two-pass variance, as in numpy)."""
  epsilon: float

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (d,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (d,), jnp.float32)
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias


class Attention(nn.Module):
  """Causal multi-head self-attention with a learned relative-position bias (this layer's own)."""
  config: TransformerConfig

  @nn.compact
  def __call__(self, x, mask):
    c = self.config
    d, h, k = c.d_model, c.num_heads, c.head_dim
    wq = self.param("query", _normal(d ** -0.5), (d, h, k), jnp.float32)
    wk = self.param("key", _normal(d ** -0.5), (d, h, k), jnp.float32)
    wv = self.param("value", _normal(d ** -0.5), (d, h, k), jnp.float32)
    wo = self.param("out", _normal((h * k) ** -0.5), (h, k, d), jnp.float32)
    rel_bias = self.param("rel_bias", lambda key, shape, dtype: jnp.asarray(
        recency_bias_init(*shape), dtype), (c.num_buckets, h), jnp.float32)
    length = x.shape[1]
    # Static buckets from the numpy reference, so both implementations share one definition.
    buckets = numpy_inference.relative_position_buckets(length, length, c.num_buckets,
                                                        c.max_distance)
    bias = jnp.transpose(rel_bias[jnp.asarray(buckets)], (2, 0, 1))[None]  # [1, H, L, L]
    q = jnp.einsum("bld,dhk->blhk", x, wq)
    kk = jnp.einsum("bld,dhk->blhk", x, wk)
    v = jnp.einsum("bld,dhk->blhk", x, wv)
    s = jnp.einsum("bqhk,bmhk->bhqm", q, kk) / np.float32(np.sqrt(k)) + bias
    s = jnp.where(mask, s, np.float32(numpy_inference.MASK_VALUE))
    s = jax.nn.softmax(s, axis=-1)
    o = jnp.einsum("bhqm,bmhk->bqhk", s, v)
    return jnp.einsum("bqhk,hkd->bqd", o, wo)


class Mlp(nn.Module):
  """ReLU feed-forward layer d_model -> mlp_dim -> d_model."""
  config: TransformerConfig

  @nn.compact
  def __call__(self, x):
    d, f = self.config.d_model, self.config.mlp_dim
    wi = self.param("wi", _normal(d ** -0.5), (d, f), jnp.float32)
    bi = self.param("bi", nn.initializers.zeros, (f,), jnp.float32)
    wo = self.param("wo", _normal(f ** -0.5), (f, d), jnp.float32)
    bo = self.param("bo", nn.initializers.zeros, (d,), jnp.float32)
    return jax.nn.relu(x @ wi + bi) @ wo + bo


class Block(nn.Module):
  config: TransformerConfig

  @nn.compact
  def __call__(self, h, mask):
    eps = self.config.layer_norm_epsilon
    h = h + Attention(self.config, name="attention")(LayerNorm(eps, name="attention_norm")(h), mask)
    return h + Mlp(self.config, name="mlp")(LayerNorm(eps, name="mlp_norm")(h))


class DecoderTransformer(nn.Module):
  """Maps input tokens [B, L] (BOS first) to float32 logits [B, L, vocab_size] (M1: 258).

  segment_ids (optional, [B, L] int): packed training rows hold several independent segments,
  each starting with BOS; a position attends only to earlier positions of its own segment, so each
  segment is modelled from an empty context exactly as at inference. None means one segment.
  """
  config: TransformerConfig

  @nn.compact
  def __call__(self, inputs, segment_ids=None):
    c = self.config
    length = inputs.shape[1]
    mask = jnp.tril(jnp.ones((length, length), dtype=bool))[None, None]
    if segment_ids is not None:
      mask = mask & (segment_ids[:, None, :, None] == segment_ids[:, None, None, :])
    embedding = self.param("embedding", _normal(1.0), (c.vocab_size, c.d_model), jnp.float32)
    h = jnp.take(embedding, inputs, axis=0)
    for l in range(c.num_layers):
      h = Block(c, name=f"layers_{l}")(h, mask)
    h = LayerNorm(c.layer_norm_epsilon, name="final_norm")(h)
    kernel = self.param("output", _normal(c.d_model ** -0.5), (c.d_model, c.vocab_size),
                        jnp.float32)
    return h @ kernel


def init_params(config: TransformerConfig, seed: int) -> Params:
  """Returns a params tree (no 'params' wrapper) drawn with numpy from the modules' initializers.

  Same distributions as DecoderTransformer.init, but drawn on the host: no XLA compilation
  (seconds on CPU), and the same initial weights on every platform for a given seed.
  """
  rng = np.random.default_rng([seed, 0x4d31])
  d, f, hk = config.d_model, config.mlp_dim, config.num_heads * config.head_dim
  stddev = {"embedding": 1.0, "query": d ** -0.5, "key": d ** -0.5, "value": d ** -0.5,
            "out": hk ** -0.5, "wi": d ** -0.5, "wo": f ** -0.5, "kernel": d ** -0.5}
  flat = {}
  for name, shape in numpy_inference.param_shapes(config).items():
    leaf = name.rsplit("/", 1)[1]
    if leaf == "scale":
      flat[name] = np.ones(shape, np.float32)
    elif leaf in stddev:
      flat[name] = (stddev[leaf] * rng.standard_normal(shape)).astype(np.float32)
    elif leaf == "rel_bias":
      flat[name] = recency_bias_init(*shape)
    else:  # biases
      flat[name] = np.zeros(shape, np.float32)
  return unflatten_params(flat)


def flatten_params(params: Params) -> dict[str, np.ndarray]:
  """Flax params tree -> {'/'-joined name: float32 numpy array} (the checkpoint's keys)."""
  flat = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = "/".join(p.key for p in path)
    flat[name] = np.asarray(leaf, dtype=np.float32)
  # Embedding and output are module-level params; give them the checkpoint's names.
  renamed = {}
  for name, value in flat.items():
    renamed[{"embedding": "embed/embedding", "output": "output/kernel"}.get(name, name)] = value
  return renamed


def unflatten_params(flat: dict[str, np.ndarray]) -> Params:
  """Inverse of flatten_params."""
  tree: dict = {}
  for name, value in flat.items():
    name = {"embed/embedding": "embedding", "output/kernel": "output"}.get(name, name)
    node = tree
    parts = name.split("/")
    for part in parts[:-1]:
      node = node.setdefault(part, {})
    node[parts[-1]] = jnp.asarray(value)
  return tree


def logits_fn(config: TransformerConfig):
  """Returns a jitted (params, inputs[, segment_ids]) -> logits function."""
  model = DecoderTransformer(config)
  return jax.jit(lambda params, inputs, segment_ids=None: model.apply(
      {"params": params}, inputs, segment_ids))
