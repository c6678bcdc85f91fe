"""M1's GEMMs as int8 x int8 -> int32 on AVX-512 VNNI (vpdpbusd), where numba's target has it.

The exact engine's GEMM operands are int8 values (activations clipped to +-127, int8 weights) and
every output is an integer (integer_forward's module docstring). BLAS multiplies them as float32
(16 multiply-adds per 512-bit instruction); vpdpbusd multiplies 64 byte pairs per instruction
into 16 int32 sums. Measured on this repository's 2-core machine (AMD EPYC, one thread), M1's
five GEMM shapes at 317 rows: 7.6x the rate of numpy's BLAS, and ahead at every row count from 1
(`python benchmarks/engine_benchmark.py` prints the figure of the day).

Why the result is the exact integer a @ w (so equal to BLAS's float32 result, which is exact
below 2**24, and to the numpy reference):
  * vpdpbusd multiplies an unsigned byte by a signed byte and adds the four products of each
    32-bit lane to it in int32, wrapping, without saturation (vpdpbuSds would saturate). The
    activations are signed, so the kernel feeds a + 128 (a xor 0x80: -128..127 -> 0..255) and
    subtracts 128 * sum_k w[k, j] per column afterwards, both exact integers.
  * No int32 sum wraps: |sum_k (a + 128) w| <= K * 255 * 128 < 2**31 for K <= MAX_DEPTH, and
    the correction and the result are smaller still.
  * Nothing depends on the order of the additions (integers), nor on how many rows share a
    call: the kernel computes rows in tiles of 4, and a last partial tile repeats the last row
    (the same integers written twice to the same place).

Only `matmul` and `pack` are the interface; `SUPPORTED` says whether numba compiles this
process's kernels for a target with AVX-512 VNNI, read as numba's codegen reads it: the host's
features (with NUMBA_ENABLE_AVX applied), or NUMBA_CPU_FEATURES where set (numba sets it to ""
for NUMBA_CPU_NAME=generic). It is false there without VNNI, and under NUMBA_DISABLE_JIT;
callers use BLAS there, which gives the same integers. numba's cache keys its code by the
target (triple, CPU name, features): with neither variable set, a cache copied to another CPU
is recompiled, never run. A user who names a target (NUMBA_CPU_NAME with NUMBA_CPU_FEATURES)
asserts that every machine that loads the cache has it, for this kernel as for every other
numba kernel.

The kernel reads no other file of this package (numba's cache checks only this one).
"""
from __future__ import annotations

from typing import NamedTuple

import numba
from numba.core import codegen as numba_codegen
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

# Output columns per tile: 4 vectors of 16 int32 lanes. Rows per tile: 4, so a tile keeps 16
# accumulators, 4 weight vectors and a broadcast in registers (of 32).
TILE_COLUMNS = 64
TILE_ROWS = 4
# Depth K at which K * 255 * 128 reaches 2**31 (int32 lanes must not wrap).
MAX_DEPTH = ((1 << 31) - 1) // (255 * 128)


def _numba_target_features() -> dict[str, bool]:
  """The CPU features numba's JIT compiles for, read as numba's own codegen reads them
  (CPUCodegen._get_host_cpu_features): NUMBA_CPU_FEATURES where set (numba sets it to "" for
  NUMBA_CPU_NAME=generic), else the host's with NUMBA_ENABLE_AVX applied. A "+x" / "-x" list,
  the last entry for a feature winning, as LLVM reads it."""
  listed = numba.config.CPU_FEATURES
  if listed is None:
    listed = numba_codegen.get_host_cpu_features()
  features = {}
  for entry in listed.split(","):
    entry = entry.strip()
    if entry[:1] in ("+", "-"):
      features[entry[1:]] = entry[0] == "+"
  return features


def _numba_target_has_vnni() -> bool:
  """Whether numba compiles this process's kernels, and for a target with AVX-512 F, BW and VNNI
  (the kernel's instructions; without them LLVM aborts the process while compiling it)."""
  if numba.config.DISABLE_JIT:  # the kernel's intrinsics do not run as Python
    return False
  features = _numba_target_features()  # an x86 target's; others lack these names
  return all(features.get(n, False) for n in ("avx512f", "avx512bw", "avx512vnni"))


SUPPORTED = _numba_target_has_vnni()


# 16 x int32 as an LLVM vector, a numba type of its own so that kernels hold them in variables.
class _Int32x16(types.Type):
  def __init__(self):
    super().__init__(name="Int32x16")


_int32x16 = _Int32x16()
_VECTOR = ir.VectorType(ir.IntType(32), 16)


@register_model(_Int32x16)
class _Int32x16Model(models.PrimitiveModel):
  def __init__(self, dmm, fe_type):
    super().__init__(dmm, fe_type, _VECTOR)


def _byte_pointer(context, builder, array_type, array, byte_offset, pointer_type):
  data = context.make_array(array_type)(context, builder, array).data
  byte = builder.gep(builder.bitcast(data, ir.IntType(8).as_pointer()), [byte_offset])
  return builder.bitcast(byte, pointer_type)


@intrinsic
def _zero(typingctx):  # pylint: disable=unused-argument
  def codegen(context, builder, signature, args):
    return ir.Constant(_VECTOR, [0] * 16)
  return _int32x16(), codegen


@intrinsic
def _load(typingctx, array, byte_offset):  # pylint: disable=unused-argument
  """The 64 bytes of `array` from `byte_offset` (unaligned load)."""
  def codegen(context, builder, signature, args):
    pointer = _byte_pointer(context, builder, signature.args[0], args[0], args[1],
                            _VECTOR.as_pointer())
    return builder.load(pointer, align=1)
  return _int32x16(array, byte_offset), codegen


@intrinsic
def _broadcast_unsigned(typingctx, array, byte_offset):  # pylint: disable=unused-argument
  """The 4 int8 of `array` at `byte_offset`, each + 128 (xor 0x80: an unsigned byte), as one
  int32 in all 16 lanes."""
  def codegen(context, builder, signature, args):
    i32 = ir.IntType(32)
    pointer = _byte_pointer(context, builder, signature.args[0], args[0], args[1],
                            i32.as_pointer())
    word = builder.xor(builder.load(pointer, align=1), ir.Constant(i32, 0x80808080 - (1 << 32)))
    lane0 = builder.insert_element(ir.Constant(_VECTOR, ir.Undefined), word, ir.Constant(i32, 0))
    return builder.shuffle_vector(lane0, ir.Constant(_VECTOR, ir.Undefined),
                                  ir.Constant(_VECTOR, [0] * 16))
  return _int32x16(array, byte_offset), codegen


@intrinsic
def _dot_bytes(typingctx, acc, unsigned_bytes, signed_bytes):  # pylint: disable=unused-argument
  """acc + per lane the 4 products unsigned byte x signed byte (vpdpbusd, wrapping int32)."""
  def codegen(context, builder, signature, args):
    vpdpbusd = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(_VECTOR, [_VECTOR] * 3), "llvm.x86.avx512.vpdpbusd.512")
    return builder.call(vpdpbusd, list(args))
  return _int32x16(_int32x16, _int32x16, _int32x16), codegen


@intrinsic
def _store_minus(typingctx, out, index, vector, subtrahend, sub_index):  # pylint: disable=unused-argument
  """out.flat[index : index + 16] = vector - subtrahend.flat[sub_index : sub_index + 16] (int32)."""
  def codegen(context, builder, signature, args):
    out_array, out_index, value, sub_array, sub_at = args
    four = ir.Constant(out_index.type, 4)
    target = _byte_pointer(context, builder, signature.args[0], out_array,
                           builder.mul(out_index, four), _VECTOR.as_pointer())
    source = _byte_pointer(context, builder, signature.args[3], sub_array,
                           builder.mul(sub_at, four), _VECTOR.as_pointer())
    builder.store(builder.sub(value, builder.load(source, align=1)), target, align=1)
    return context.get_dummy_value()
  return types.void(out, index, vector, subtrahend, sub_index), codegen


@numba.njit(cache=True, nogil=True, _nrt=False)
def _gemm_kernel(a, panels, correction, out):
  """out int32 [R, N_pad] = a int8 [R, K] (C order) @ the packed weights (see pack)."""
  rows, depth = a.shape
  width = out.shape[1]
  groups = depth // 4
  last = rows - 1
  for tile in range(width // TILE_COLUMNS):
    panel = tile * groups * 256
    column = tile * TILE_COLUMNS
    for r0 in range(0, rows, TILE_ROWS):
      r1, r2, r3 = min(r0 + 1, last), min(r0 + 2, last), min(r0 + 3, last)
      a0, a1, a2, a3 = r0 * depth, r1 * depth, r2 * depth, r3 * depth
      # Unrolled by hand: numba has no arrays of vectors, so the tile's 16 accumulators are 16
      # named variables, which LLVM keeps in registers.
      c00, c01, c02, c03 = _zero(), _zero(), _zero(), _zero()
      c10, c11, c12, c13 = _zero(), _zero(), _zero(), _zero()
      c20, c21, c22, c23 = _zero(), _zero(), _zero(), _zero()
      c30, c31, c32, c33 = _zero(), _zero(), _zero(), _zero()
      for g in range(groups):
        at = panel + g * 256
        w0, w1 = _load(panels, at), _load(panels, at + 64)
        w2, w3 = _load(panels, at + 128), _load(panels, at + 192)
        k = 4 * g
        b = _broadcast_unsigned(a, a0 + k)
        c00, c01 = _dot_bytes(c00, b, w0), _dot_bytes(c01, b, w1)
        c02, c03 = _dot_bytes(c02, b, w2), _dot_bytes(c03, b, w3)
        b = _broadcast_unsigned(a, a1 + k)
        c10, c11 = _dot_bytes(c10, b, w0), _dot_bytes(c11, b, w1)
        c12, c13 = _dot_bytes(c12, b, w2), _dot_bytes(c13, b, w3)
        b = _broadcast_unsigned(a, a2 + k)
        c20, c21 = _dot_bytes(c20, b, w0), _dot_bytes(c21, b, w1)
        c22, c23 = _dot_bytes(c22, b, w2), _dot_bytes(c23, b, w3)
        b = _broadcast_unsigned(a, a3 + k)
        c30, c31 = _dot_bytes(c30, b, w0), _dot_bytes(c31, b, w1)
        c32, c33 = _dot_bytes(c32, b, w2), _dot_bytes(c33, b, w3)
      # Rows of a partial last tile repeat row `last`: the same values stored again.
      for r, v0, v1, v2, v3 in ((r0, c00, c01, c02, c03), (r1, c10, c11, c12, c13),
                                (r2, c20, c21, c22, c23), (r3, c30, c31, c32, c33)):
        at = r * width + column
        _store_minus(out, at, v0, correction, column)
        _store_minus(out, at + 16, v1, correction, column + 16)
        _store_minus(out, at + 32, v2, correction, column + 32)
        _store_minus(out, at + 48, v3, correction, column + 48)


class PackedWeights(NamedTuple):
  """A weight matrix [K, N] in the kernel's layout.

  panels: int8 [N_pad / 64, K / 4, 4, 16, 4]; panels[t, g, v, l, i] = w[4 g + i, 64 t + 16 v + l]
    (0 in the columns past N), so each 64-byte vector holds 4 consecutive depths of 16 columns.
  correction: int32 [N_pad], 128 * sum_k w[k, j] (what the unsigned offset of a adds).
  columns: N.
  """
  panels: np.ndarray
  correction: np.ndarray
  columns: int


def pack(weights) -> PackedWeights:
  """Packs integer weights [K, N] (any dtype holding int8 values, K a multiple of 4 and at most
  MAX_DEPTH) for `matmul`; raises ValueError on anything else."""
  w = np.asarray(weights)
  if w.ndim != 2:
    raise ValueError(f"weights must be [K, N], got shape {w.shape}")
  depth, columns = w.shape
  if depth % 4 or not 0 < depth <= MAX_DEPTH:
    raise ValueError(f"weight depth K must be a multiple of 4 in 4 .. {MAX_DEPTH}, got {depth}")
  as_int8 = w.astype(np.int8)
  if not np.array_equal(as_int8, w):
    raise ValueError("weights must hold int8 values (integers in -128 .. 127)")
  padded = -(-columns // TILE_COLUMNS) * TILE_COLUMNS
  full = np.zeros((depth, padded), np.int8)
  full[:, :columns] = as_int8
  panels = full.reshape(depth // 4, 4, padded // TILE_COLUMNS, 4, 16).transpose(2, 0, 3, 4, 1)
  correction = 128 * full.sum(axis=0, dtype=np.int32)
  return PackedWeights(np.ascontiguousarray(panels), correction, columns)


def matmul(a: np.ndarray, packed: PackedWeights) -> np.ndarray:
  """a [R, K] int8 @ the packed [K, N] weights: the exact int32 products [R, N] (a view of an
  [R, N_pad] array). Needs SUPPORTED; K must be the packed depth."""
  if not SUPPORTED:
    raise RuntimeError("int8_gemm needs numba to target a CPU with AVX-512 VNNI")
  if a.dtype != np.int8 or a.ndim != 2 or a.shape[1] != 4 * packed.panels.shape[1]:
    raise ValueError(f"a must be int8 [R, {4 * packed.panels.shape[1]}], got {a.dtype} "
                     f"{a.shape}")
  a = np.ascontiguousarray(a)
  out = np.empty((a.shape[0], packed.correction.shape[0]), np.int32)
  if a.shape[0]:
    _gemm_kernel(a, packed.panels, packed.correction, out)
  return out[:, :packed.columns]
