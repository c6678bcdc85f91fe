"""M1: the byte-level language model that drives the arithmetic coder.

Modules (the Transformer itself, its numpy forward pass, checkpoints and the training loop are in
neural_compression.transformer, shared with M2):
  config: M1Config and the named sizes (framework-free).
  data: M1's data stream: the job's bytes records or the embedded corpus as training windows
    (tf.data; TensorFlow imported only when a pipeline is built).
  evaluator: validation bits/byte, full context and after a reset (imports JAX).
  model_card: MODEL_CARD.md of an export.
  export_exact: exports (float weights + exact integer model calibrated on M1's own data).
  exact_quantization: the exact integer model; engine/: its inference engine (integer forward,
    JAX backend, compiled prefix cache, lockstep sessions).
  train: the trainer's entry point (imports JAX, Optax).
  numpy_inference: the old import path of transformer.numpy_inference (the same module).

This package's __init__ imports nothing, so `from neural_compression.m1 import engine` works on
a worker without JAX installed.
"""
