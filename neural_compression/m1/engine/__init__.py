"""The exact M1 engine, split by concern.

  integer_forward  the integer forward pass (why it is exact) and the numpy backend
  jax_backend      the same forward jitted with JAX (GPU workers), 64-bit only in its scope
  compiled_forward the same integers per row in numba, GEMMs on BLAS (the CPU default)
  int8_gemm        the compiled forward's GEMMs as int8 x int8 -> int32 on AVX-512 VNNI
  prefix_cache     the compiled prefix trie (KV + CDF per prefix) under a byte budget
  cached_coding    the coder's state machines driven through the prefix cache in one loop
  lockstep         AC's whole-sequence sessions through one KV buffer
  model            ExactM1Model: the batched CdfModel over all of it; load_exact_model
  checkpoint       verifying and loading the exact export
"""
from neural_compression.m1.engine.checkpoint import (ExactCheckpointError, context_length,
                                                     load_exact_arrays, verify_checkpoint)
from neural_compression.m1.engine.integer_forward import (EXACT_K, PAPER_CONTEXT, ExactM1,
                                                          NumpyBackend)
from neural_compression.m1.engine.lockstep import LockstepSession
from neural_compression.m1.engine.model import (DEFAULT_CACHE_BYTES, ExactM1Model,
                                                PrefixCacheSession, load_exact_model)
from neural_compression.methods import PRECISION_BITS

__all__ = ["DEFAULT_CACHE_BYTES", "EXACT_K", "PAPER_CONTEXT", "PRECISION_BITS",
           "ExactCheckpointError", "ExactM1", "ExactM1Model", "LockstepSession", "NumpyBackend",
           "PrefixCacheSession", "context_length", "load_exact_arrays", "load_exact_model",
           "verify_checkpoint"]
