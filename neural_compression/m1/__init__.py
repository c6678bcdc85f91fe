"""M1: the byte-level language model that drives the arithmetic coder.

Modules:
  config: M1Config and the named sizes (framework-free).
  numpy_inference: checkpoint loading and the forward pass in numpy only (what workers use).
  model: the Flax definition used for training (imports JAX).
  train: the trainer (imports JAX, Optax).

This package's __init__ imports nothing, so `from neural_compression.m1 import numpy_inference`
works on a worker without JAX installed.
"""
