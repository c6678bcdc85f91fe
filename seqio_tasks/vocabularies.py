"""SeqIO vocabularies for M2: compressed-token ids <-> text, one class per method family.

ID LAYOUT (every class here). T5X reserves PAD=0 and EOS=1, so model ids are

  0 = PAD, 1 = EOS, 2 = UNK (reserved, never produced by the data),
  raw token t of the method -> model id t + ID_OFFSET (3),

and `vocab_size` = the method's vocabulary + 3 (e.g. 65,539 for v65k, 259 for v256). The records
on disk hold raw tokens; the tasks' preprocessor adds the offset. The data has no EOS id: the
paper's compressed streams have no end-of-input symbol, so tasks set add_eos=False.

TEXT. A token sequence decodes to *symbols* (bytes + the document separator EOS=256, see
`neural_compression.symbols`), and symbols render as text as follows: byte runs are UTF-8
(invalid sequences, e.g. a character cut at an example boundary, become U+FFFD) and each EOS
symbol is the marker EOS_TEXT ('<EOS>'). `encode` is the inverse (EOS_TEXT -> EOS symbol), so
decode(encode(s)) == s for every str s. `decode_symbols` is the exact, lossless path (tests and
bits/byte accounting use it); `decode_tf` returns the same text UTF-8 encoded.

Decoding is *lenient*: a sequence that does not decode (a model's prediction, say) decodes to
the text of its longest decodable prefix (found by bisection), never an exception; use
`decode_symbols(ids, strict=True)` to get the error instead.

Artifacts (loaded on first use, never at import): the static unigram JSON and the SentencePiece
model come from the run in the data directory (`seqio_tasks.data`), found by the sha256 its
manifest records; M1 methods load the M1 checkpoint with
`neural_compression.m1.engine.load_exact_model` and check it against the manifest's
m1_checksum. Equality and hashing are by (family, method name): the method defines the token
space, and the manifest checksums make the artifacts behind one name unique.
"""
from __future__ import annotations

import functools
import threading
from typing import Iterable, Sequence

import gin
import numpy as np
import seqio
import tensorflow as tf

from neural_compression import methods
from neural_compression import run_manifest as rm
from neural_compression import symbols as sym
from seqio_tasks import data

# Built compressors, keyed by (family, method, artifact checksums...); manifests by data dir.
_compressor_cache: dict[tuple, object] = {}
_manifest_cache: dict[str, tuple] = {}
_compressor_cache_lock = threading.Lock()



def clear_cache() -> None:
  """Drops every built compressor and cached manifest (frees M1; the next decode rebuilds)."""
  with _compressor_cache_lock:
    _compressor_cache.clear()
    _manifest_cache.clear()


PAD_ID = 0
EOS_ID = 1
UNK_ID = 2
ID_OFFSET = 3  # model id = raw token + ID_OFFSET
EOS_TEXT = "<EOS>"  # how the document separator symbol renders in decoded text
_EOS_BYTES = EOS_TEXT.encode("utf-8")


def symbols_to_text(symbols: np.ndarray) -> str:
  """Renders symbols as text: UTF-8 byte runs (errors -> U+FFFD), EOS as EOS_TEXT."""
  symbols = np.asarray(symbols)
  cuts = np.flatnonzero(symbols == sym.EOS)
  parts, start = [], 0
  for cut in cuts.tolist() + [len(symbols)]:
    parts.append(symbols[start:cut].astype(np.uint8).tobytes().decode("utf-8", "replace"))
    start = cut + 1
  return EOS_TEXT.join(parts)


def text_to_symbols(text: str | bytes) -> np.ndarray:
  """Inverse of symbols_to_text on valid text: UTF-8 bytes, each EOS_TEXT -> one EOS symbol."""
  data_ = text.encode("utf-8") if isinstance(text, str) else bytes(text)
  pieces = [sym.bytes_to_symbols(p) for p in data_.split(_EOS_BYTES)]
  out = []
  for i, piece in enumerate(pieces):
    if i:
      out.append(np.asarray([sym.EOS], sym.SYMBOL_DTYPE))
    out.append(piece)
  return np.concatenate(out).astype(sym.SYMBOL_DTYPE)


def raw_to_model_ids(tokens: np.ndarray) -> np.ndarray:
  """Raw method tokens -> model ids (+ID_OFFSET), int32."""
  return np.asarray(tokens, np.int64).astype(np.int32) + ID_OFFSET


def model_to_raw_tokens(ids: Iterable[int]) -> np.ndarray:
  """Model ids -> raw tokens: drops PAD/EOS/UNK (ids < ID_OFFSET) and removes the offset."""
  ids = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, np.int64).ravel()
  return (ids[ids >= ID_OFFSET] - ID_OFFSET).astype(np.int32)


class CompressedTextVocabulary(seqio.Vocabulary):
  """Base of the method families: model ids (see the module docstring) <-> text.

  Subclasses say which methods they serve (`KINDS`) and how to build the method's Compressor
  from the run's artifacts (`_build_compressor`). Thread-safe: a compressor is built once per set
  of artifacts (`_artifact_key`).
  """

  KINDS: tuple[str, ...] = ()

  def __init__(self, method: str, data_dir: str | None = None):
    """Creates the vocabulary of one method; loads nothing yet.

    Args:
      method: a method string of this family (e.g. 'static_ac:v256').
      data_dir: the pipeline run whose artifacts decode the tokens; None resolves
        `seqio_tasks.data.get_data_dir()` when the artifacts are first needed.

    Raises:
      MethodError: if the method string is invalid or of another family.
    """
    self.spec = methods.parse_method(method)
    if self.spec.kind not in self.KINDS:
      raise methods.MethodError(f"{type(self).__name__} serves {self.KINDS}, not {method!r}")
    self.method = self.spec.name
    self._data_dir = data_dir
    self._lock = threading.Lock()
    super().__init__(extra_ids=0)

  # --- ids -------------------------------------------------------------------------------------
  @property
  def eos_id(self) -> int:
    return EOS_ID

  @property
  def unk_id(self) -> int:
    return UNK_ID

  @property
  def method_vocab_size(self) -> int:
    """Distinct raw tokens of the method (2**N for N-bit bitstream tokens)."""
    return 1 << self.spec.token_bits

  @property
  def _base_vocab_size(self) -> int:
    return self.method_vocab_size + ID_OFFSET

  # --- the compressor --------------------------------------------------------------------------
  @property
  def data_dir(self) -> str:
    return self._data_dir or data.get_data_dir()

  @property
  def compressor(self):
    """The method's `Compressor` for the run now in the data directory.

    Cached by the checksums of the artifacts it is built from (`_artifact_key`), never by the
    directory alone: point `set_data_dir` at another run, or rewrite the run, and the next
    decode uses that run's artifacts.
    """
    key = (type(self).__name__, self.method) + self._artifact_key()
    with _compressor_cache_lock:
      compressor = _compressor_cache.get(key)
    if compressor is None:
      with self._lock:  # one build at a time per vocabulary
        with _compressor_cache_lock:
          compressor = _compressor_cache.get(key)
        if compressor is None:
          compressor = self._build_compressor()
          with _compressor_cache_lock:
            _compressor_cache[key] = compressor
    return compressor

  def _artifact_key(self) -> tuple:
    """What identifies the artifacts a compressor is built from (none for gzip and bytes)."""
    return ()

  def _manifest(self) -> dict:
    """The manifest of the run in the data directory, re-read whenever its file changes."""
    data_dir = self.data_dir
    stamp = data.manifest_fingerprint(data_dir)
    with _compressor_cache_lock:
      cached = _manifest_cache.get(data_dir)
    if cached is None or cached[0] != stamp or stamp is None:
      manifest = data.read_manifest(data_dir, self.method)
      with _compressor_cache_lock:
        _manifest_cache[data_dir] = (stamp, manifest)
      return manifest
    return cached[1]

  def _build_compressor(self):
    raise NotImplementedError

  # --- text <-> ids ----------------------------------------------------------------------------
  def encode_symbols(self, symbols: np.ndarray) -> np.ndarray:
    """Compresses symbols into model ids (int32), e.g. a prompt; no EOS id is added."""
    return raw_to_model_ids(self.compressor.encode(sym.validate_symbols(symbols)).tokens)

  def decode_symbols(self, ids: Iterable[int], strict: bool = False) -> np.ndarray:
    """Model ids -> the symbols they determine (exact; a trimmed record -> its raw_bytes symbols).

    Args:
      ids: model ids; PAD/EOS/UNK ids are dropped before decoding.
      strict: raise the compressor's ValueError on undecodable input instead of returning the
        symbols of the longest decodable prefix.
    """
    tokens = model_to_raw_tokens(ids)
    compressor = self.compressor
    try:
      return compressor.decode_prefix(tokens)
    except ValueError:
      if strict:
        raise
    # Bisect for the longest decodable prefix: a prefix of a decodable stream decodes, so the
    # decodable lengths form a prefix-closed set (near enough for lenient display decoding).
    lo, hi = 0, len(tokens)
    while lo + 1 < hi:
      mid = (lo + hi) // 2
      try:
        compressor.decode_prefix(tokens[:mid])
        lo = mid
      except ValueError:
        hi = mid
    try:
      return compressor.decode_prefix(tokens[:lo])
    except ValueError:
      return np.zeros(0, sym.SYMBOL_DTYPE)

  def _encode(self, s: str) -> Sequence[int]:
    return self.encode_symbols(text_to_symbols(s)).tolist()

  def _decode(self, ids) -> str:
    return symbols_to_text(self.decode_symbols(ids))

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    """A scalar tf.string -> int32 ids [num_tokens] (through tf.numpy_function)."""
    def encode_np(text):
      return np.asarray(self._encode(bytes(text).decode("utf-8", "replace")), np.int32)

    ids = tf.numpy_function(encode_np, [s], tf.int32, stateful=False)
    ids.set_shape([None])
    return ids

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    """int ids [..., length] -> UTF-8 text tf.string [...] (through tf.numpy_function)."""
    def decode_np(arr):
      arr = np.asarray(arr)
      flat = arr.reshape(-1, arr.shape[-1]) if arr.ndim else arr.reshape(1, 0)
      out = np.array([self._decode(row).encode("utf-8") for row in flat], dtype=object)
      return out.reshape(arr.shape[:-1])

    ids = tf.convert_to_tensor(ids)
    text = tf.numpy_function(decode_np, [ids], tf.string, stateful=False)
    text.set_shape(ids.shape[:-1])
    return text

  # --- identity --------------------------------------------------------------------------------
  def _key(self):
    return (type(self).__name__, self.method)

  def __eq__(self, other):
    return isinstance(other, CompressedTextVocabulary) and self._key() == other._key()

  def __hash__(self):
    return hash(self._key())

  def __str__(self):
    return f"{type(self).__name__}(method={self.method!r}, vocab_size={self.vocab_size})"

  __repr__ = __str__

  def __getstate__(self):
    # Picklable (seqio and Beam copy vocabularies): drop the lock (compressors live in the
    # module's cache, not in the object).
    state = dict(self.__dict__)
    del state["_lock"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()


class M1ArithmeticVocabulary(CompressedTextVocabulary):
  """EqualInfoAC[b, v] and AC[v] with M1: decoding runs M1 (the exact numpy engine).

  The M1 checkpoint is `m1_checkpoint` if given, else $NCC_M1_CHECKPOINT, else the shipped
  m1_checkpoint/; it must have the manifest's m1_checksum (another M1 decodes to garbage).
  """

  KINDS = methods.M1_KINDS

  def __init__(self, method: str, data_dir: str | None = None, m1_checkpoint: str | None = None):
    super().__init__(method, data_dir)
    self._m1_checkpoint = m1_checkpoint

  def _artifact_key(self) -> tuple:
    manifest = self._manifest()
    return (self._m1_checkpoint or data.default_m1_checkpoint(), manifest.get("m1_checksum"),
            rm.m1_context(manifest))

  def _build_compressor(self):
    # Imported here, and only for M1 methods: it pulls in the M1 engine.
    from neural_compression.m1 import engine as exact_engine
    checkpoint = self._m1_checkpoint or data.default_m1_checkpoint()
    manifest = self._manifest()
    want = manifest.get("m1_checksum")
    if want and data.directory_checksum(checkpoint) != want:
      raise data.MissingDataError(
          f"M1 checkpoint {checkpoint!r} is not the one that compressed the run in "
          f"{self.data_dir!r} (m1_checksum {want}); point ${data.M1_CHECKPOINT_ENV} or "
          "seqio_tasks.vocabulary_for(..., m1_checkpoint=...) at that checkpoint")
    # The window the run was encoded with (the manifest's), not whatever the checkpoint says now.
    model = exact_engine.load_exact_model(checkpoint, max_context=rm.m1_context(manifest))
    return methods.build_compressor(self.spec, m1_model=model)


class StaticArithmeticVocabulary(CompressedTextVocabulary):
  """StaticAC[v] and static EqualInfoAC[b, v]: the run's static unigram model (JSON artifact)."""

  KINDS = methods.UNIGRAM_KINDS

  def _artifact_key(self) -> tuple:
    return (self._manifest().get("static_unigram_sha256"),)

  def _build_compressor(self):
    from neural_compression.methods import static_unigram
    text = data.read_artifact(self.data_dir, self.method, "static_unigram_sha256",
                              "static_unigram", "static_unigram-*.json")
    model = static_unigram.StaticUnigramModel.from_json(text.decode("utf-8"))
    return methods.build_compressor(self.spec, unigram_model=model)


class GzipVocabulary(CompressedTextVocabulary):
  """GZip[v]: zlib bytes as N-bit tokens; needs no artifact."""

  KINDS = ("gzip",)

  def _build_compressor(self):
    return methods.build_compressor(self.spec)


class BytesVocabulary(CompressedTextVocabulary):
  """Bytes: one token per symbol (256 byte values, then the document EOS); no artifact."""

  KINDS = ("bytes",)

  @property
  def method_vocab_size(self) -> int:
    return self.compressor.vocab_size

  def _build_compressor(self):
    return methods.build_compressor(self.spec)


class SentencePieceVocabulary(CompressedTextVocabulary):
  """SentencePiece[K]: the run's trained SentencePiece model (found by its sha256)."""

  KINDS = ("spm",)

  @property
  def method_vocab_size(self) -> int:
    # The piece count is fixed by the method string; the model only confirms it.
    return self.spec.spm_vocab_size

  def _artifact_key(self) -> tuple:
    return (self._manifest().get("spm_model_sha256"),)

  def _build_compressor(self):
    proto = data.read_artifact(self.data_dir, self.method, "spm_model_sha256", "spm_model",
                               f"spm_v{self.spec.spm_vocab_size}-*.model")
    compressor = methods.build_compressor(self.spec, spm_model_proto=proto)
    if compressor.vocab_size != self.spec.spm_vocab_size:
      raise ValueError(f"{self.method}: the run's SentencePiece model has "
                       f"{compressor.vocab_size} pieces, expected {self.spec.spm_vocab_size}")
    return compressor


FAMILIES = (M1ArithmeticVocabulary, StaticArithmeticVocabulary, GzipVocabulary, BytesVocabulary,
            SentencePieceVocabulary)


def family_of(method: str) -> type[CompressedTextVocabulary]:
  kind = methods.parse_method(method).kind
  for cls in FAMILIES:
    if kind in cls.KINDS:
      return cls
  raise methods.MethodError(f"no vocabulary family for {method!r}")


@functools.lru_cache(maxsize=None)
def _cached_vocabulary(method: str, data_dir: str | None,
                       m1_checkpoint: str | None) -> CompressedTextVocabulary:
  cls = family_of(method)
  if cls is M1ArithmeticVocabulary:
    return cls(method, data_dir, m1_checkpoint)
  if m1_checkpoint:
    raise methods.MethodError(f"{method!r} does not use M1: drop m1_checkpoint")
  return cls(method, data_dir)


@gin.configurable(module="seqio_tasks")
def vocabulary_for(method: str = gin.REQUIRED, data_dir: str | None = None,
                   m1_checkpoint: str | None = None) -> CompressedTextVocabulary:
  """The vocabulary of one method string (gin: VOCABULARY = @seqio_tasks.vocabulary_for()).

  Returns the same object for the same arguments, equal (==, hash) to the vocabulary of the
  method's task `c4_<slug>`, as T5X requires of the model's and the task's vocabularies.

  Args:
    method: a method string, e.g. 'equal_info_ac:b16:v65k' (see neural_compression.methods).
    data_dir: the run whose artifacts decode; None: seqio_tasks.data.get_data_dir() when needed.
    m1_checkpoint: M1 methods only; None: $NCC_M1_CHECKPOINT or the shipped m1_checkpoint/.
  """
  name = methods.parse_method(method).name
  return _cached_vocabulary(name, data_dir, m1_checkpoint)


@gin.configurable(module="seqio_tasks")
def padded_vocab_size(vocabulary: seqio.Vocabulary = gin.REQUIRED, multiple: int = 128) -> int:
  """vocabulary.vocab_size rounded up to a multiple of `multiple` (T5X pads for TPU efficiency).

  Gin: network.TransformerConfig.vocab_size = @seqio_tasks.padded_vocab_size(); the ids above
  vocab_size are never targets, so the model learns to give them no probability.
  """
  return -(-vocabulary.vocab_size // multiple) * multiple
