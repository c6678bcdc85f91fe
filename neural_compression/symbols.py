"""The symbol alphabet shared by the whole project, defined once.

Text is coded as a sequence of *symbols*: the 256 byte values plus EOS, the document separator that
the data pipeline appends after every document (the paper's <EOS>). The arithmetic coder, M1 and
every baseline work on this alphabet. M1 additionally knows PAD, which never reaches the coder.

Symbol sequences are numpy arrays of dtype uint16 (SYMBOL_DTYPE) with values in [0, NUM_SYMBOLS).
"""
from __future__ import annotations

import numpy as np

NUM_BYTE_VALUES = 256
EOS = 256  # document separator; appended after every document
NUM_SYMBOLS = 257  # the coder's alphabet: 256 bytes + EOS
PAD = 257  # M1 input padding only; never coded
M1_VOCAB_SIZE = 258
SYMBOL_DTYPE = np.uint16


def bytes_to_symbols(data: bytes) -> np.ndarray:
  """Returns the symbols of raw bytes (no EOS added): one symbol per byte."""
  return np.frombuffer(data, dtype=np.uint8).astype(SYMBOL_DTYPE)


def document_symbols(text: bytes | str) -> np.ndarray:
  """Returns a document's symbols followed by one EOS (len(utf-8 bytes) + 1 symbols)."""
  if isinstance(text, str):
    text = text.encode("utf-8")
  out = np.empty(len(text) + 1, dtype=SYMBOL_DTYPE)
  out[:-1] = np.frombuffer(text, dtype=np.uint8)
  out[-1] = EOS
  return out


def validate_symbols(symbols: np.ndarray) -> np.ndarray:
  """Returns `symbols` as a 1-D SYMBOL_DTYPE array; raises ValueError if any is out of range."""
  arr = np.asarray(symbols)
  if arr.ndim != 1:
    raise ValueError(f"symbol sequences are 1-D, got shape {arr.shape}")
  if arr.size and (arr.min() < 0 or arr.max() >= NUM_SYMBOLS):
    raise ValueError(f"symbols must lie in [0, {NUM_SYMBOLS}), got [{arr.min()}, {arr.max()}]")
  return arr.astype(SYMBOL_DTYPE, copy=False)


# A reversible byte serialization of symbol sequences, for byte-oriented baselines (GZip,
# SentencePiece) that cannot see EOS as a 257th value. 0xFF never occurs in UTF-8 text, so the
# escape costs nothing on valid text: EOS -> FF 00, byte FF -> FF FF.
_ESCAPE = 0xFF


def symbols_to_escaped_bytes(symbols: np.ndarray) -> bytes:
  """Serializes symbols to bytes: EOS -> b'\\xff\\x00', 0xFF -> b'\\xff\\xff', others as is."""
  symbols = validate_symbols(symbols)
  out = bytearray()
  for s in symbols.tolist():
    if s == EOS:
      out += b"\xff\x00"
    elif s == _ESCAPE:
      out += b"\xff\xff"
    else:
      out.append(s)
  return bytes(out)


def escaped_bytes_to_symbols(data: bytes) -> np.ndarray:
  """Inverse of symbols_to_escaped_bytes; raises ValueError on a dangling or unknown escape."""
  out = []
  i, n = 0, len(data)
  while i < n:
    c = data[i]
    if c != _ESCAPE:
      out.append(c)
      i += 1
      continue
    if i + 1 >= n:
      raise ValueError(f"dangling escape byte at offset {i} of {n}")
    nxt = data[i + 1]
    if nxt == 0x00:
      out.append(EOS)
    elif nxt == _ESCAPE:
      out.append(_ESCAPE)
    else:
      raise ValueError(f"unknown escape FF {nxt:02X} at offset {i}")
    i += 2
  return np.asarray(out, dtype=SYMBOL_DTYPE)
