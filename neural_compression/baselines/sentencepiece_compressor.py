"""SentencePiece baseline: a unigram model trained on the train split (T5-like, 32k pieces).

Lossless by construction. We train with identity normalization, no whitespace collapsing, no
dummy prefix, and byte fallback, so a piece's surface text (with U+2581 read as a space) is
exactly its input bytes. Bytes that cannot be text pieces (invalid UTF-8, which appears where an
example boundary cuts a character, the U+2581 character itself) are written as byte-fallback
pieces <0xNN>; EOS is the model's eos id. Decoding maps every id back to bytes piece by piece.

An existing model (e.g. T5's `spm.model`) is accepted too; without byte fallback it is lossless
only on text its pieces cover, and encoding raises `ValueError` where a piece would be <unk>.
"""
from __future__ import annotations

import os
import tempfile
from typing import Iterable

import numpy as np

from neural_compression import symbols as sym
from neural_compression.compressor import TOKEN_DTYPE, Compressor, Encoded

_SPACE_MARK = "\u2581"


def train_sentencepiece_from_text_file(path: str, vocab_size: int = 32000,
                                       num_threads: int = 2) -> bytes:
  """Trains the lossless unigram model on a text file (one sentence per line); returns its bytes.

  Deterministic for a given file and thread count (SentencePiece seeds its sampling).
  """
  import sentencepiece as spm
  with tempfile.TemporaryDirectory() as tmp:
    prefix = os.path.join(tmp, "spm")
    spm.SentencePieceTrainer.train(
        input=path, model_prefix=prefix, vocab_size=vocab_size, model_type="unigram",
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        add_dummy_prefix=False, byte_fallback=True, allow_whitespace_only_pieces=True,
        split_digits=True, character_coverage=0.9995, max_sentence_length=1 << 16,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, num_threads=num_threads,
        minloglevel=2, hard_vocab_limit=False)
    from sentencepiece import sentencepiece_model_pb2
    proto = sentencepiece_model_pb2.ModelProto()
    with open(prefix + ".model", "rb") as f:
      proto.ParseFromString(f.read())
  # The trainer records its temporary paths; drop them so equal training gives equal bytes.
  del proto.trainer_spec.input[:]
  proto.trainer_spec.model_prefix = ""
  return proto.SerializeToString(deterministic=True)


def train_sentencepiece(texts: Iterable[str], vocab_size: int = 32000) -> bytes:
  """Trains on documents (each split into lines); returns the model's bytes."""
  with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8", delete=False) as f:
    for text in texts:
      f.write(text.replace("\r", "\n") + "\n")
    path = f.name
  try:
    return train_sentencepiece_from_text_file(path, vocab_size)
  finally:
    os.unlink(path)


def _text_runs(data: bytes):
  """Splits bytes into (is_text, bytes) runs: valid UTF-8 without U+2581, or single raw bytes."""
  i, n = 0, len(data)
  start = 0
  while i < n:
    b = data[i]
    width = 1 if b < 0x80 else 2 if 0xC2 <= b < 0xE0 else 3 if 0xE0 <= b < 0xF0 else \
        4 if 0xF0 <= b < 0xF5 else 0
    ok = width > 0 and i + width <= n
    if ok and width > 1:
      try:
        ch = data[i:i + width].decode("utf-8")
        ok = ch != _SPACE_MARK
      except UnicodeDecodeError:
        ok = False
    if ok:
      i += width
      continue
    if start < i:
      yield True, data[start:i]
    yield False, data[i:i + 1]
    i += 1
    start = i
  if start < n:
    yield True, data[start:n]


class SentencePieceCompressor(Compressor):
  """Token ids are the model's piece ids (vocab = its piece count); picklable (holds bytes)."""

  def __init__(self, model_proto: bytes):
    self.model_proto = bytes(model_proto)
    self._sp = None

  def __getstate__(self):
    return {"model_proto": self.model_proto, "_sp": None}

  @property
  def sp(self):
    if self._sp is None:
      import sentencepiece as spm
      self._sp = spm.SentencePieceProcessor(model_proto=self.model_proto)
      self._piece_bytes = []
      self._byte_ids = {}
      for i in range(self._sp.get_piece_size()):
        piece = self._sp.id_to_piece(i)
        if self._sp.is_byte(i):
          value = int(piece[3:5], 16)
          self._byte_ids[value] = i
          self._piece_bytes.append(bytes([value]))
        elif self._sp.is_control(i) or self._sp.is_unknown(i):
          self._piece_bytes.append(None)
        else:
          self._piece_bytes.append(piece.replace(_SPACE_MARK, " ").encode("utf-8"))
    return self._sp

  @property
  def name(self) -> str:
    v = self.vocab_size
    return f"spm:v{v // 1000}k" if v % 1000 == 0 else f"spm:v{v}"

  @property
  def vocab_size(self) -> int:
    return self.sp.get_piece_size()

  def encode(self, symbols: np.ndarray) -> Encoded:
    symbols = sym.validate_symbols(symbols)
    sp = self.sp
    ids: list[int] = []
    eos_positions = np.flatnonzero(symbols == sym.EOS).tolist()
    start = 0
    for end in eos_positions + [len(symbols)]:
      data = symbols[start:end].astype(np.uint8).tobytes()
      for is_text, run in _text_runs(data):
        if is_text:
          pieces = sp.encode(run.decode("utf-8"))
          if sp.unk_id() in pieces:
            raise ValueError(f"text {run[:40]!r}... maps to <unk>: this SentencePiece model "
                             "has no byte fallback for it, so it cannot be coded losslessly")
          ids += pieces
        else:
          if run[0] not in self._byte_ids:
            raise ValueError(f"byte {run[0]:#04x} needs byte fallback, which this model lacks")
          ids.append(self._byte_ids[run[0]])
      if end < len(symbols):
        ids.append(sp.eos_id())
      start = end + 1
    tokens = np.asarray(ids, TOKEN_DTYPE)
    lengths = [1 if t == sp.eos_id() else len(self._piece_bytes[t]) for t in ids]
    counts = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)
    return Encoded(tokens=tokens, num_bits=len(tokens) * self.bits_per_token, num_windows=1,
                   symbols_at_token=counts)

  def decode(self, tokens: np.ndarray) -> np.ndarray:
    sp = self.sp
    out = bytearray()
    eos_at = []
    for t in np.asarray(tokens).tolist():
      if not 0 <= t < len(self._piece_bytes):
        raise ValueError(f"token id {t} is outside the vocabulary of {len(self._piece_bytes)}")
      if t == sp.eos_id():
        eos_at.append(len(out))
        out.append(0)  # placeholder, replaced by EOS below
        continue
      piece = self._piece_bytes[t]
      if piece is None:
        raise ValueError(f"token id {t} ({sp.id_to_piece(t)}) is a control piece, not text")
      out += piece
    result = np.frombuffer(bytes(out), np.uint8).astype(sym.SYMBOL_DTYPE)
    result[eos_at] = sym.EOS
    return result
