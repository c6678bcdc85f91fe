"""Method strings: every compression method and variant of the paper, by name.

Grammar (the Beam job's --methods, the SeqIO task names and the vocabularies all use it):

  equal_info_ac:b<b>:v<V>[:paper]   EqualInfoAC[b, v] with M1 (default closing rule: unambiguous)
  static_equal_info_ac:b<b>:v<V>[:paper]   the same windows with the static unigram model
  ac:v<V>                           AC: M1 over the whole example, no resets
  static_ac:v<V>                    StaticAC: static unigram model over the whole example
  gzip:v<V>                         zlib (default level) bytes as N-bit tokens
  bytes                             one token per byte (ByT5-style), EOS as its own id
  spm:v<K>                          SentencePiece unigram model with a vocabulary of K pieces

V is 256 / 65k / 65536 (N = 8 / 16 bits), or 2**N for any N in 1..16 (e.g. v4096); K is e.g.
32k or 32000. b is at least the coder precision P (14) and N <= b.
"""
from __future__ import annotations

import dataclasses
import re

from neural_compression.coding import bit_tokens
from neural_compression.coding import equal_info_windows as eiw

PRECISION_BITS = 14  # the coder precision P of every method (the paper's); written only here
DEFAULT_PRECISION_BITS = PRECISION_BITS  # the name parse_method's callers knew it by

WINDOWED_KINDS = ("equal_info_ac", "static_equal_info_ac")
BITSTREAM_KINDS = WINDOWED_KINDS + ("ac", "static_ac", "gzip")
KINDS = BITSTREAM_KINDS + ("bytes", "spm")
M1_KINDS = ("equal_info_ac", "ac")
UNIGRAM_KINDS = ("static_equal_info_ac", "static_ac")


class MethodError(ValueError):
  """An impossible method string; the message says what to write instead."""


@dataclasses.dataclass(frozen=True)
class MethodSpec:
  """A parsed method string (see module docstring). Units: bits for b and N, pieces for spm."""
  kind: str
  window_bits: int | None = None
  token_bits: int | None = None
  spm_vocab_size: int | None = None
  rule: eiw.ClosingRule = eiw.ClosingRule.UNAMBIGUOUS

  @property
  def name(self) -> str:
    """The canonical method string (parse_method(spec.name) == spec)."""
    if self.kind == "bytes":
      return "bytes"
    if self.kind == "spm":
      v = self.spm_vocab_size
      return f"spm:v{v // 1000}k" if v % 1000 == 0 else f"spm:v{v}"
    parts = [self.kind]
    if self.window_bits is not None:
      parts.append(f"b{self.window_bits}")
    parts.append(bit_tokens.vocab_label(self.token_bits))
    if self.rule is not eiw.ClosingRule.UNAMBIGUOUS:
      parts.append(self.rule.value)
    return ":".join(parts)

  @property
  def slug(self) -> str:
    """A file- and task-name-safe form of the name, e.g. 'equal_info_ac_b16_v65k'."""
    return self.name.replace(":", "_")

  @property
  def uses_m1(self) -> bool:
    return self.kind in M1_KINDS

  @property
  def is_windowed(self) -> bool:
    return self.kind in WINDOWED_KINDS

  def precision_mismatch(self, model) -> bool:
    """Whether a model's CDF precision P exceeds this method's window bits b (needs b >= P)."""
    return self.is_windowed and self.window_bits < model.precision_bits


def _parse_vocab(field: str, method: str) -> int:
  m = re.fullmatch(r"v(\d+)(k?)", field)
  if not m:
    raise MethodError(f"{method!r}: expected a vocabulary like v256 or v65k, got {field!r}")
  value = int(m.group(1)) * (1024 if m.group(2) else 1)
  if m.group(2) and int(m.group(1)) == 65:
    value = 65536  # the paper's name for 2**16
  if value & (value - 1) or not 2 <= value <= 1 << bit_tokens.MAX_TOKEN_BITS:
    raise MethodError(f"{method!r}: the vocabulary must be 2**N tokens with 1 <= N <= "
                      f"{bit_tokens.MAX_TOKEN_BITS} (v256, v65k, v4096, ...), got {field!r}")
  return value.bit_length() - 1


def parse_method(method: str, precision_bits: int = DEFAULT_PRECISION_BITS) -> MethodSpec:
  """Parses one method string; raises MethodError with a corrective message."""
  fields = method.strip().split(":")
  kind = fields[0]
  if kind not in KINDS:
    raise MethodError(f"unknown method {method!r}; the kinds are {', '.join(KINDS)} "
                      "(e.g. equal_info_ac:b16:v65k, static_ac:v256, gzip:v256, bytes, spm:v32k)")
  rest = fields[1:]
  if kind == "bytes":
    if rest:
      raise MethodError(f"{method!r}: 'bytes' takes no options")
    return MethodSpec("bytes")
  if kind == "spm":
    m = re.fullmatch(r"v(\d+)(k?)", rest[0]) if len(rest) == 1 else None
    if not m:
      raise MethodError(f"{method!r}: write spm:v<K>, e.g. spm:v32k (32,000 pieces)")
    size = int(m.group(1)) * (1000 if m.group(2) else 1)
    if size < 260:
      raise MethodError(f"{method!r}: an spm vocabulary needs >= 260 pieces (256 byte pieces)")
    return MethodSpec("spm", spm_vocab_size=size)
  rule = eiw.ClosingRule.UNAMBIGUOUS
  if kind in WINDOWED_KINDS:
    if rest and rest[-1] in {r.value for r in eiw.ClosingRule}:
      rule = eiw.ClosingRule(rest.pop())
    if len(rest) != 2 or not re.fullmatch(r"b\d+", rest[0]):
      raise MethodError(f"{method!r}: write {kind}:b<bits>:v<vocab>[:paper], "
                        f"e.g. {kind}:b16:v65k")
    b = int(rest[0][1:])
    n = _parse_vocab(rest[1], method)
    try:
      eiw.check_window_bits(b, precision_bits)
    except ValueError as e:
      raise MethodError(f"{method!r}: {e}") from None
    if n > b:
      raise MethodError(f"{method!r}: tokens of N={n} bits cannot exceed windows of b={b} bits")
    return MethodSpec(kind, window_bits=b, token_bits=n, rule=rule)
  if len(rest) != 1:
    raise MethodError(f"{method!r}: write {kind}:v<vocab>, e.g. {kind}:v256")
  return MethodSpec(kind, token_bits=_parse_vocab(rest[0], method))


def parse_methods(methods: str, precision_bits: int = DEFAULT_PRECISION_BITS) -> list[MethodSpec]:
  """Parses a comma-separated list; refuses duplicates and an empty list."""
  specs = [parse_method(m, precision_bits) for m in methods.split(",") if m.strip()]
  if not specs:
    raise MethodError("no methods given; e.g. --methods=equal_info_ac:b16:v65k,bytes")
  names = [s.name for s in specs]
  dupes = sorted({n for n in names if names.count(n) > 1})
  if dupes:
    raise MethodError(f"methods listed twice: {', '.join(dupes)}")
  return specs


# Every method and variant of the paper's tables (paper_facts.md).
PAPER_METHODS = (
    ["bytes", "spm:v32k"]
    + [f"{k}:{v}" for k in ("ac", "static_ac", "gzip") for v in ("v256", "v65k")]
    + [f"equal_info_ac:b{b}:{v}" for b in (16, 32, 64, 128) for v in ("v256", "v65k")])
