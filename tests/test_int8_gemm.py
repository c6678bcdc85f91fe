"""int8_gemm: the exact integer products on AVX-512 VNNI, and the choice of where it runs."""
import os
import subprocess
import sys

import numpy as np
import pytest

from neural_compression.m1.engine import int8_gemm

needs_vnni = pytest.mark.skipif(not int8_gemm.SUPPORTED,
                                reason="numba does not target AVX-512 VNNI on this CPU")

# M1's GEMM shapes (K, N) and the edges: N past a tile, N below one, the smallest K.
SHAPES = [(192, 576), (192, 192), (192, 768), (768, 192), (192, 258), (4, 1), (8, 65), (64, 130)]


@needs_vnni
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 7, 8, 9, 64, 317])
@pytest.mark.parametrize("depth,columns", SHAPES)
def test_matmul_is_the_exact_integer_product(rows, depth, columns):
  """Random int8 operands with rows of extremes (-128, 127 in both): every int32 equals the
  int64 product, for partial row tiles (rows not a multiple of 4) and padded columns."""
  rng = np.random.default_rng(rows * 100_000 + depth * 1000 + columns)
  a = rng.integers(-128, 128, (rows, depth)).astype(np.int8)
  w = rng.integers(-128, 128, (depth, columns))
  a[0] = -128
  a[-1, ::2] = 127
  w[:, 0] = -128
  w[: depth // 2, -1] = 127
  got = int8_gemm.matmul(a, int8_gemm.pack(w.astype(np.float32)))
  assert got.dtype == np.int32 and got.shape == (rows, columns)
  np.testing.assert_array_equal(got, a.astype(np.int64) @ w)


@needs_vnni
def test_matmul_at_the_largest_sums_does_not_wrap():
  """K = MAX_DEPTH rounded down to 4 and every product at its extreme: the unsigned-offset sums
  come within 1% of 2**31, and the results are still exact."""
  depth = int8_gemm.MAX_DEPTH // 4 * 4
  a = np.full((5, depth), 127, np.int8)
  a[1] = -128
  w = np.full((depth, 16), 127)
  w[:, 1] = -128
  got = int8_gemm.matmul(a, int8_gemm.pack(w))
  np.testing.assert_array_equal(got, a.astype(np.int64) @ w)
  assert depth * 255 * 128 >= 0.99 * 2**31


@needs_vnni
def test_matmul_of_no_rows():
  got = int8_gemm.matmul(np.zeros((0, 8), np.int8), int8_gemm.pack(np.ones((8, 3))))
  assert got.shape == (0, 3) and got.dtype == np.int32


@pytest.mark.parametrize("weights,message", [
    (np.ones((6, 4)), "multiple of 4"),
    (np.ones((int8_gemm.MAX_DEPTH // 4 * 4 + 4, 4)), "multiple of 4"),
    (np.full((8, 4), 128.0), "int8 values"),
    (np.full((8, 4), 0.5), "int8 values"),
    (np.ones(8), r"\[K, N\]"),
])
def test_pack_refuses_weights_the_kernel_cannot_multiply_exactly(weights, message):
  with pytest.raises(ValueError, match=message):
    int8_gemm.pack(weights)


@needs_vnni
def test_matmul_refuses_operands_of_another_dtype_or_depth():
  packed = int8_gemm.pack(np.ones((8, 4)))
  with pytest.raises(ValueError, match="int8"):
    int8_gemm.matmul(np.ones((2, 8), np.int16), packed)
  with pytest.raises(ValueError, match="int8"):
    int8_gemm.matmul(np.ones((2, 12), np.int8), packed)


# In a fresh process: SUPPORTED, and where it is true, one product checked (a wrong SUPPORTED
# makes LLVM abort the process while compiling the kernel, so the return code says it).
_PROBE = """
import numpy as np
from neural_compression.m1.engine import int8_gemm
if int8_gemm.SUPPORTED:
  a = np.arange(-64, 64, dtype=np.int8).reshape(2, 64)
  w = np.arange(64 * 3).reshape(64, 3) % 255 - 127
  assert (int8_gemm.matmul(a, int8_gemm.pack(w)) == a.astype(np.int64) @ w).all()
print(int8_gemm.SUPPORTED)
"""


def _supported_in_subprocess(**env) -> str:
  environment = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
  done = subprocess.run([sys.executable, "-c", _PROBE], env={**environment, **env},
                        capture_output=True, text=True, check=False)
  assert done.returncode == 0, (env, done.returncode, done.stderr[-2000:])
  return done.stdout.strip()


@pytest.mark.parametrize("env", [
    {"NUMBA_CPU_NAME": "generic"},  # numba's portable target: no features
    {"NUMBA_ENABLE_AVX": "0"},  # numba turns every avx* feature of the host off
    {"NUMBA_CPU_FEATURES": "-avx512vnni"},
    {"NUMBA_CPU_NAME": "generic", "NUMBA_CPU_FEATURES": "+avx512f,+avx512bw,+avx512vnni,-avx512f"},
    {"NUMBA_DISABLE_JIT": "1"},  # the intrinsics do not run as Python
])
def test_not_supported_where_numba_does_not_compile_for_vnni(env):
  """SUPPORTED reads the target as numba's codegen does; where it is false the forward uses BLAS
  (tests/test_m1_exact_engine.py runs that path), and the process never compiles the kernel."""
  assert _supported_in_subprocess(**env) == "False"


@needs_vnni
def test_supported_and_exact_where_numba_targets_vnni():
  """The host itself, and a named target listing the features (legal here: this CPU has them)."""
  assert _supported_in_subprocess() == "True"
  assert _supported_in_subprocess(
      NUMBA_CPU_NAME="generic", NUMBA_CPU_FEATURES="+avx512f,+avx512bw,+avx512vnni") == "True"


def test_matmul_refuses_to_run_where_not_supported(monkeypatch):
  monkeypatch.setattr(int8_gemm, "SUPPORTED", False)
  with pytest.raises(RuntimeError, match="VNNI"):
    int8_gemm.matmul(np.zeros((1, 8), np.int8), int8_gemm.pack(np.ones((8, 4))))
