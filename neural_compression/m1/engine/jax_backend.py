"""The JAX backend of the exact engine: the same integer forward (ExactM1.forward_new), jitted.

One implementation, two backends: ExactM1 is written against an array module `xp`; here it runs
with jax.numpy under jit, on a GPU when one is visible (or on the CPU, as the tests do). The
integer steps need int64, so every call of this backend runs inside `jax.enable_x64(True)`
(`JaxBackend.scope`): the process's own `jax_enable_x64` setting (e.g. a T5X training loop
decoding through a vocabulary) is never changed.
Batches are padded to power-of-two rows and history lengths so that only a few shapes compile;
padding rows have no history and are dropped, and never touch other rows' arithmetic.
"""
from __future__ import annotations

import functools
import os
import sys

import numpy as np


# Device nodes a GPU shows to a process: CUDA and ROCm (also inside containers, which mount them),
# and WSL2's GPU paravirtualization (/dev/dxg, with no /dev/nvidia*).
GPU_DEVICE_PATHS = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia", "/dev/kfd",
                    "/dev/dxg")


def gpu_visible() -> bool:
  """Whether JAX is installed and sees a GPU (the engine then prefers this backend).

  Without a GPU device node JAX is not even imported: its import costs every CPU worker
  seconds and hundreds of MB (measured: 2.9 s of a 25 s DirectRunner job).
  """
  if "jax" not in sys.modules and not any(os.path.exists(p) for p in GPU_DEVICE_PATHS):
    return False
  try:
    import jax
    return any(d.platform == "gpu" for d in jax.devices())
  except Exception:  # no JAX, or no usable backend: the numpy path is used
    return False


def _bucket(n: int) -> int:
  return 1 << max(0, (n - 1).bit_length())


class JaxBackend:
  """jax.numpy ops for ExactM1, plus a jitted, shape-bucketed `forward_new`."""
  name = "jax"

  def __init__(self):
    raise TypeError("JaxBackend is used as a class")

  @staticmethod
  def _jnp():
    import jax.numpy as jnp
    return jnp

  @staticmethod
  def scope():
    """64-bit integers for the duration of a `with` block (restored after it)."""
    import jax
    return jax.enable_x64(True)

  @classmethod
  def setup(cls):
    cls.xp = cls._jnp()

  @staticmethod
  def asarray(x, dtype=None):
    return JaxBackend._jnp().asarray(x, dtype=dtype)

  @staticmethod
  def to_numpy(x):
    return np.asarray(x)


def jitted_forward(engine):
  """Returns f(tokens, hist_k, hist_v, hist_len) like engine.forward_new, jitted and padded."""
  import jax
  fn = jax.jit(lambda tokens, hk, hv, hl: engine.forward_new(tokens, list(hk), list(hv), hl))

  @functools.wraps(engine.forward_new)
  def call(tokens, hist_k, hist_v, hist_len):
    jnp = JaxBackend._jnp()
    r = int(tokens.shape[0])
    t = int(hist_k[0].shape[1]) if hist_k else 0
    rp, tp = max(64, _bucket(r)), max(16, _bucket(t))  # few shapes: few compilations
    tok = np.zeros(rp, np.int64)
    tok[:r] = np.asarray(tokens)
    hl = np.zeros(rp, np.int64)
    hl[:r] = np.asarray(hist_len)
    hk = [np.zeros((rp, tp) + tuple(x.shape[2:]), np.float32) for x in hist_k]
    hv = [np.zeros((rp, tp) + tuple(x.shape[2:]), np.float32) for x in hist_v]
    for dst, src in zip(hk + hv, list(hist_k) + list(hist_v)):
      dst[:r, :t] = np.asarray(src)
    with JaxBackend.scope():
      new_k, new_v, cdf = fn(jnp.asarray(tok), tuple(jnp.asarray(x) for x in hk),
                             tuple(jnp.asarray(x) for x in hv), jnp.asarray(hl))
      return ([np.asarray(x[:r]) for x in new_k], [np.asarray(x[:r]) for x in new_v],
              np.asarray(cdf[:r]))

  return call
