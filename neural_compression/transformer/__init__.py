"""The decoder-only Transformer that M1 and M2 share.

Modules:
  config: TransformerConfig (framework-free).
  numpy_inference: the numpy reference forward pass and the checkpoint format (no JAX).
  model: the Flax definition used for training (imports JAX).
  training: loss, optimizer, schedule, data parallelism, training-state checkpoints and the step
    loop both trainers run (imports JAX, Optax).

This package's __init__ imports nothing, so numpy-only workers can import numpy_inference.
"""
