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


def _supported_in_subprocess(**env) -> str:
  return subprocess.run(
      [sys.executable, "-c", "from neural_compression.m1.engine import int8_gemm; "
                             "print(int8_gemm.SUPPORTED)"],
      env={**os.environ, **env}, capture_output=True, text=True, check=True).stdout.strip()


def test_not_supported_where_numba_targets_a_cpu_without_vnni():
  """NUMBA_CPU_NAME=generic (a portable cache) has no AVX-512: the forward must use BLAS there.
  A named CPU whose listed features include VNNI may use it."""
  assert _supported_in_subprocess(NUMBA_CPU_NAME="generic") == "False"
  assert _supported_in_subprocess(
      NUMBA_CPU_NAME="znver4", NUMBA_CPU_FEATURES="+avx512f,+avx512bw,+avx512vnni") == "True"


def test_matmul_refuses_to_run_where_not_supported(monkeypatch):
  monkeypatch.setattr(int8_gemm, "SUPPORTED", False)
  with pytest.raises(RuntimeError, match="VNNI"):
    int8_gemm.matmul(np.zeros((1, 8), np.int8), int8_gemm.pack(np.ones((8, 4))))
