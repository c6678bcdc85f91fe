"""Every compression method of the paper, one module each, behind one `Compressor` interface.

  spec            method strings (names, kinds, vocabularies) and PRECISION_BITS, written once
  compressor      the Compressor interface and the Encoded result (tokens, raw bytes)
  arithmetic      EqualInfoAC and AC over any CdfModel (M1 or the static unigram)
  static_unigram  the static unigram model (StaticAC's and static EqualInfoAC's artifact)
  gzip  bytes  sentencepiece   the non-neural baselines

`build_compressor(spec, ...)` turns a parsed method string and its artifacts into its Compressor.
"""
from __future__ import annotations

from neural_compression.methods.spec import (BITSTREAM_KINDS, DEFAULT_PRECISION_BITS, KINDS,
                                             M1_KINDS, PAPER_METHODS, PRECISION_BITS,
                                             UNIGRAM_KINDS, WINDOWED_KINDS, MethodError,
                                             MethodSpec, parse_method, parse_methods)

__all__ = ["BITSTREAM_KINDS", "DEFAULT_PRECISION_BITS", "KINDS", "M1_KINDS", "PAPER_METHODS",
           "PRECISION_BITS", "UNIGRAM_KINDS", "WINDOWED_KINDS", "MethodError", "MethodSpec",
           "build_compressor", "parse_method", "parse_methods"]


def build_compressor(spec: MethodSpec, *, m1_model=None, unigram_model=None,
                     spm_model_proto: bytes | None = None):
  """Returns the `Compressor` for a parsed method, given the artifacts it needs.

  Args:
    spec: a parsed method string.
    m1_model: a `CdfModel` backed by M1 (the exact engine) for equal_info_ac and ac.
    unigram_model: a `StaticUnigramModel` for static_ac and static_equal_info_ac.
    spm_model_proto: the serialized SentencePiece model for spm.
  Raises:
    MethodError: if the method's artifact is missing.
  """
  # Imported here so that parsing method strings stays free of model dependencies.
  from neural_compression.methods import arithmetic as acc

  def need(artifact, what):
    if artifact is None:
      raise MethodError(f"method {spec.name!r} needs {what}")
    return artifact

  if spec.kind in M1_KINDS or spec.kind in UNIGRAM_KINDS:
    if spec.kind in M1_KINDS:
      model = need(m1_model, "the M1 model (--m1_checkpoint)")
    else:
      model = need(unigram_model, "the static unigram model (--static_unigram)")
    if spec.precision_mismatch(model):
      raise MethodError(f"method {spec.name!r}: the model's CDF precision is "
                        f"{model.precision_bits} bits, windows need b >= P")
    if spec.is_windowed:
      return acc.EqualInfoACCompressor(model, spec.window_bits, spec.token_bits, spec.rule,
                                       name_prefix=spec.kind)
    return acc.ArithmeticCodingCompressor(model, spec.token_bits, name_prefix=spec.kind)
  if spec.kind == "gzip":
    from neural_compression.methods import gzip
    return gzip.GzipCompressor(spec.token_bits)
  if spec.kind == "bytes":
    from neural_compression.methods import bytes as bytes_method
    return bytes_method.BytesCompressor()
  if spec.kind == "spm":
    from neural_compression.methods import sentencepiece
    return sentencepiece.SentencePieceCompressor(
        need(spm_model_proto, "a SentencePiece model (--spm_model)"))
  raise MethodError(f"no compressor for {spec.name!r}")
