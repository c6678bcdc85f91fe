"""SentencePiece baseline: a unigram model trained on the train split (T5-like, 32k pieces).

The paper tokenizes with T5's 32k unigram vocabulary. We train our own on the TRAINING split only
(never validation, which the ratios are measured on) and make it lossless on arbitrary bytes:

  * Training: identity normalization, no whitespace collapsing, no dummy prefix and byte fallback,
    so a piece's surface text (U+2581 read as a space) is exactly the input bytes it covers, and
    any character outside the vocabulary becomes its UTF-8 bytes as byte pieces <0xNN>.
  * Encoding a symbol sequence: split at EOS into documents; EOS becomes the model's eos id. A
    document's bytes may be invalid UTF-8 (examples are cut at arbitrary byte offsets, so a
    character can be split at an edge). Maximal valid UTF-8 runs are encoded by SentencePiece;
    every other byte, and the bytes of U+2581 itself (SentencePiece reads it as a space), become
    byte pieces <0xNN>.
  * Decoding maps every id back to its bytes piece by piece: byte pieces to their raw byte, other
    pieces to their surface text with U+2581 -> space, the eos id to EOS. No normalizer runs, so
    this is the exact inverse of encoding; on valid text it agrees with SentencePiece's decode.

Any existing model file (e.g. T5's `spm.model`) is accepted too. We always run a model with
identity normalization, no dummy prefix and no whitespace collapsing, whatever it was trained
with, since NFKC, a dummy prefix and whitespace collapsing cannot be inverted; its pieces and
scores are its own. A model without byte fallback is lossless only on text its vocabulary
covers: `encode` raises ValueError where a piece would be <unk> or a byte needs a byte piece (T5's
vocabulary, for example, has no piece for a newline). Every encoded run is checked to decode to
its exact bytes, so `encode` either returns a lossless encoding or raises.

The compressor is picklable (Beam ships it to workers): it holds the serialized model bytes and
loads the SentencePiece processor lazily in each process.
"""
from __future__ import annotations

import hashlib
import math
import os
import re
import tempfile
from typing import Iterable, Mapping

import numpy as np

from neural_compression import symbols as sym
from neural_compression.methods.compressor import TOKEN_DTYPE, Compressor, Encoded

DEFAULT_VOCAB_SIZE = 32000  # T5's vocabulary size, as in the paper
# The trainer's result depends on its thread count (each thread sums its share of the expected
# counts), so the count is fixed rather than taken from the machine.
DEFAULT_NUM_THREADS = 2
DEFAULT_SEED = 0

_SPACE_MARK = "\u2581"  # SentencePiece's visible space; decodes as b" "
# After decoding with 'surrogateescape', each byte that is not part of valid UTF-8 is the lone
# surrogate U+DC80..U+DCFF (byte 0x80..0xFF); valid UTF-8 never decodes to a surrogate. Such bytes
# and U+2581 are coded as byte pieces, everything between them by SentencePiece.
_RAW_CHARS = re.compile("([\udc80-\udcff\u2581])")


def trainer_options(vocab_size: int = DEFAULT_VOCAB_SIZE,
                    num_threads: int = DEFAULT_NUM_THREADS) -> dict:
  """The SentencePieceTrainer options of the lossless unigram model (input and prefix excluded).

  Args:
    vocab_size: pieces in the model, including 256 byte pieces and <pad>, </s>, <unk>. On a
      corpus too small for it the trainer may return fewer (hard_vocab_limit=False) and
      `train_sentencepiece_from_text_file` pads with unused pieces to exactly vocab_size.
    num_threads: trainer threads; part of the configuration because it changes the model.
  """
  return dict(
      model_type="unigram", vocab_size=vocab_size,
      # Lossless: no normalization, whitespace kept as is, nothing added in front of the text.
      normalization_rule_name="identity", remove_extra_whitespaces=False,
      add_dummy_prefix=False,
      # Characters outside the vocabulary (and invalid UTF-8 at encode time) as <0xNN> pieces.
      byte_fallback=True, character_coverage=0.9995,
      # Runs of spaces (indentation) may be pieces. Digits are split so that the vocabulary is
      # not spent on particular numbers (years, amounts); numbers cost one token per digit.
      allow_whitespace_only_pieces=True, split_digits=True,
      # Paragraphs are sentences; long ones are kept rather than dropped (bytes).
      max_sentence_length=1 << 16,
      # T5's layout: pad 0, eos 1, unk 2; no bos (the data has only EOS).
      pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
      # All sentences are used (input_sentence_size=0: no sampling), so the seed set before
      # training only guards against randomness in future trainer versions.
      input_sentence_size=0, num_threads=num_threads, hard_vocab_limit=False, minloglevel=2)


def _write_model(model_proto: bytes, model_prefix: str | None) -> None:
  if model_prefix:
    directory = os.path.dirname(model_prefix)
    if directory:
      os.makedirs(directory, exist_ok=True)
    with open(model_prefix + ".model", "wb") as f:
      f.write(model_proto)


def _pad_to_vocab_size(proto, vocab_size: int) -> None:
  """Appends never-emitted UNUSED pieces '<unused_K>' until the model has vocab_size pieces.

  The unigram trainer drops pieces whose expected count is tiny, so on a corpus too small
  for the vocabulary (the default corpus's 11 MB train split gives about 29k of 32k pieces) it
  returns fewer pieces. The method string 'spm:v32k' promises 32,000 ids (M2's vocabulary, and
  log2 32000 bits per token), so the rest are padding ids, as T5 pads its vocabulary with
  sentinels. SentencePiece never emits UNUSED pieces, and `decode` refuses them.
  """
  from sentencepiece import sentencepiece_model_pb2
  unused = sentencepiece_model_pb2.ModelProto.SentencePiece.UNUSED
  used = {p.piece for p in proto.pieces}
  k = 0
  while len(proto.pieces) < vocab_size:
    name = f"<unused_{k}>"
    k += 1
    if name not in used:
      proto.pieces.add(piece=name, score=0.0, type=unused)


def train_sentencepiece_from_text_file(path: str, vocab_size: int = DEFAULT_VOCAB_SIZE,
                                       num_threads: int = DEFAULT_NUM_THREADS, *,
                                       model_prefix: str | None = None,
                                       seed: int = DEFAULT_SEED) -> bytes:
  """Trains the lossless unigram model on a text file (one sentence per line).

  Deterministic: the same file, vocab_size, num_threads and seed give byte-identical models.
  The model has exactly vocab_size pieces (see `_pad_to_vocab_size`).

  Args:
    path: UTF-8 text, one training sentence (paragraph) per line.
    vocab_size: pieces in the model (see `trainer_options`).
    num_threads: trainer threads (the model depends on it; see DEFAULT_NUM_THREADS).
    model_prefix: if given, the model is also written to `<model_prefix>.model`.
    seed: SentencePiece's random generator seed.
  Returns:
    The serialized model (a SentencePiece ModelProto), the same bytes as the written file.
  """
  import sentencepiece as spm
  from sentencepiece import sentencepiece_model_pb2
  spm.set_random_generator_seed(seed)
  with tempfile.TemporaryDirectory() as tmp:
    prefix = os.path.join(tmp, "spm")
    spm.SentencePieceTrainer.train(input=path, model_prefix=prefix,
                                   **trainer_options(vocab_size, num_threads))
    proto = sentencepiece_model_pb2.ModelProto()
    with open(prefix + ".model", "rb") as f:
      proto.ParseFromString(f.read())
  # The trainer records its temporary paths; drop them so that equal training gives equal bytes.
  del proto.trainer_spec.input[:]
  proto.trainer_spec.model_prefix = ""
  _pad_to_vocab_size(proto, vocab_size)
  model_proto = proto.SerializeToString(deterministic=True)
  _write_model(model_proto, model_prefix)
  return model_proto


def train_sentencepiece(documents: Iterable[str | Mapping], vocab_size: int = DEFAULT_VOCAB_SIZE,
                        *, model_prefix: str | None = None,
                        num_threads: int = DEFAULT_NUM_THREADS, seed: int = DEFAULT_SEED) -> bytes:
  """Trains the lossless unigram model on documents; pass the TRAINING split only.

  Args:
    documents: texts, or C4-shaped records {'text': ...} as `corpus.default_corpus_documents`
      yields them. Each document is split into lines (CR counts as a line break); the line
      breaks themselves are coded as byte pieces, as SentencePiece trains on lines.
    vocab_size: pieces in the model (see `trainer_options`).
    model_prefix: if given, the model is also written to `<model_prefix>.model`.
    num_threads: trainer threads (the model depends on it).
    seed: SentencePiece's random generator seed.
  Returns:
    The serialized model; training twice on the same documents gives identical bytes.
  """
  with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8", delete=False) as f:
    for doc in documents:
      text = doc if isinstance(doc, str) else doc["text"]
      f.write(text.replace("\r", "\n") + "\n")
    path = f.name
  try:
    return train_sentencepiece_from_text_file(path, vocab_size, num_threads,
                                              model_prefix=model_prefix, seed=seed)
  finally:
    os.unlink(path)


def vocab_name(vocab_size: int) -> str:
  """The method name for a vocabulary of `vocab_size` pieces: 'spm:v32k' or 'spm:v600'."""
  return f"spm:v{vocab_size // 1000}k" if vocab_size % 1000 == 0 else f"spm:v{vocab_size}"


class SentencePieceCompressor(Compressor):
  """Tokens are the model's piece ids; vocab_size = the model's piece count.

  num_bits = num_tokens * log2(vocab_size): a tokenizer has no bitstream, so a token carries the
  information capacity of its vocabulary.
  """

  def __init__(self, model_proto: bytes, model_path: str | None = None):
    """Wraps a serialized SentencePiece model.

    Args:
      model_proto: the model file's bytes (a SentencePiece ModelProto).
      model_path: where the model came from, recorded in `config` (not read again).
    """
    self.model_proto = bytes(model_proto)
    self.model_path = model_path
    self._sp = None

  @classmethod
  def from_file(cls, path: str) -> "SentencePieceCompressor":
    """Loads a `.model` file (ours or any other, e.g. T5's spm)."""
    with open(path, "rb") as f:
      return cls(f.read(), model_path=path)

  def __getstate__(self):
    # The processor is a C++ object: ship the model bytes and rebuild it lazily in the worker.
    return {"model_proto": self.model_proto, "model_path": self.model_path}

  def __setstate__(self, state):
    self.model_proto = state["model_proto"]
    self.model_path = state.get("model_path")
    self._sp = None

  @property
  def config(self) -> dict:
    """The method's configuration: its name, the model artifact's path and content hash."""
    return {"name": self.name, "vocab_size": self.vocab_size, "model_path": self.model_path,
            "model_sha256": hashlib.sha256(self.model_proto).hexdigest()}

  @property
  def sp(self):
    """The SentencePiece processor, run without normalization (loaded on first use)."""
    self._ensure_loaded()
    return self._sp

  def _ensure_loaded(self) -> None:
    if self._sp is None:
      self._load()

  def _load(self) -> None:
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(self.model_proto)
    # NFKC, whitespace collapsing and a dummy prefix are not invertible: run any model without.
    proto.normalizer_spec.name = "identity"
    proto.normalizer_spec.precompiled_charsmap = b""
    proto.normalizer_spec.add_dummy_prefix = False
    proto.normalizer_spec.remove_extra_whitespaces = False
    sp = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
    piece_bytes: list[bytes | None] = []  # None: a piece that stands for no text
    byte_ids: dict[int, int] = {}
    for i in range(sp.get_piece_size()):
      piece = sp.id_to_piece(i)
      if sp.is_byte(i):
        value = int(piece[3:5], 16)  # '<0xNN>'
        byte_ids[value] = i
        piece_bytes.append(bytes([value]))
      elif sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
        piece_bytes.append(None)
      else:
        piece_bytes.append(piece.replace(_SPACE_MARK, " ").encode("utf-8"))
    self._piece_bytes = piece_bytes
    self._byte_ids = byte_ids
    self._eos_id = sp.eos_id()
    self._unk_id = sp.unk_id()
    self._sp = sp

  @property
  def name(self) -> str:
    return vocab_name(self.vocab_size)

  @property
  def vocab_size(self) -> int:
    return self.sp.get_piece_size()

  def _byte_piece(self, value: int) -> int:
    if value not in self._byte_ids:
      raise ValueError(f"byte {value:#04x} needs a byte-fallback piece, which this SentencePiece "
                       "model lacks, so it cannot be coded losslessly")
    return self._byte_ids[value]

  def _encode_document(self, data: bytes, ids: list[int]) -> None:
    """Appends the piece ids of one document's bytes (no EOS inside) to `ids`."""
    for part in _RAW_CHARS.split(data.decode("utf-8", "surrogateescape")):
      if not part:
        continue
      if len(part) == 1 and _RAW_CHARS.fullmatch(part):
        raw = _SPACE_MARK.encode("utf-8") if part == _SPACE_MARK else bytes([ord(part) - 0xDC00])
        ids.extend(self._byte_piece(b) for b in raw)
        continue
      pieces = self._sp.encode(part)
      if self._unk_id in pieces:
        raise ValueError(f"text {part[:40]!r} maps to <unk>: this SentencePiece model has no byte "
                         "fallback for it, so it cannot be coded losslessly")
      surface = [self._piece_bytes[t] for t in pieces]
      if None in surface or b"".join(surface) != part.encode("utf-8"):
        raise ValueError(f"text {part[:40]!r} does not survive this SentencePiece model's "
                         "segmentation byte for byte")
      ids += pieces

  def encode(self, symbols: np.ndarray) -> Encoded:
    """Encodes symbols; raises ValueError where the model cannot code them losslessly."""
    symbols = sym.validate_symbols(symbols)
    self._ensure_loaded()
    ids: list[int] = []
    start = 0
    for end in np.flatnonzero(symbols == sym.EOS).tolist() + [len(symbols)]:
      self._encode_document(symbols[start:end].astype(np.uint8).tobytes(), ids)
      if end < len(symbols):
        if self._eos_id < 0:
          raise ValueError("this SentencePiece model has no eos piece, so EOS cannot be coded")
        ids.append(self._eos_id)
      start = end + 1
    tokens = np.asarray(ids, TOKEN_DTYPE)
    lengths = [1 if t == self._eos_id else len(self._piece_bytes[t]) for t in ids]
    counts = np.zeros(len(ids) + 1, np.int64)
    np.cumsum(lengths, out=counts[1:])
    return Encoded(tokens=tokens, num_bits=len(ids) * math.log2(self.vocab_size), num_windows=1,
                   symbols_at_token=counts)

  def decode(self, tokens: np.ndarray) -> np.ndarray:
    """Maps every piece back to its bytes; any prefix of an encoding decodes to its symbols."""
    self._ensure_loaded()
    out = bytearray()
    eos_at = []
    for t in np.asarray(tokens).reshape(-1).tolist():
      if not 0 <= t < len(self._piece_bytes):
        raise ValueError(f"token id {t} is outside the vocabulary of {len(self._piece_bytes)}")
      if t == self._eos_id:
        eos_at.append(len(out))
        out.append(0)  # a placeholder byte, replaced by EOS below
        continue
      piece = self._piece_bytes[t]
      if piece is None:
        raise ValueError(f"token id {t} ({self._sp.id_to_piece(t)}) stands for no text "
                         "(a control, unknown or unused piece)")
      out += piece
    result = np.frombuffer(bytes(out), np.uint8).astype(sym.SYMBOL_DTYPE)
    result[eos_at] = sym.EOS
    return result
