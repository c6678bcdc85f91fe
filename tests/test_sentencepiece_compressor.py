"""SentencePiece baseline: lossless on any bytes (invalid UTF-8, U+2581, NUL, EOS), deterministic
training, picklable, and <unk> refused for models without byte fallback."""
import itertools
import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from neural_compression import corpus
from neural_compression import examples as ex
from neural_compression import symbols as sym
from neural_compression.methods import sentencepiece as spc
from tests import pipeline_test_corpus as corpus_gen

_VOCAB = 600


def _texts(count=60, seed=11):
  return [d["text"] for d in corpus_gen.make_documents(count, seed=seed)]


@pytest.fixture(scope="module")
def model_proto():
  return spc.train_sentencepiece(_texts(), vocab_size=_VOCAB)


@pytest.fixture(scope="module")
def compressor(model_proto):
  return spc.SentencePieceCompressor(model_proto)


def test_training_is_deterministic(model_proto, tmp_path):
  # Records or plain texts, written to a model file or not: the same bytes every time.
  records = corpus_gen.make_documents(60, seed=11)
  again = spc.train_sentencepiece(records, _VOCAB, model_prefix=str(tmp_path / "sub" / "m"))
  assert again == model_proto
  assert (tmp_path / "sub" / "m.model").read_bytes() == model_proto


def test_model_is_configured_for_lossless_coding(model_proto):
  from sentencepiece import sentencepiece_model_pb2
  proto = sentencepiece_model_pb2.ModelProto()
  proto.ParseFromString(model_proto)
  assert proto.trainer_spec.byte_fallback
  assert proto.trainer_spec.model_type == proto.trainer_spec.UNIGRAM
  assert proto.normalizer_spec.name == "identity"
  assert not proto.normalizer_spec.add_dummy_prefix
  assert not proto.normalizer_spec.remove_extra_whitespaces
  assert len(proto.pieces) == _VOCAB


pieces = st.sampled_from([b"ka", b"lo ", b"The ", b"\xc3\xa9", b"\xe2\x96\x81", b"\xff", b"\x00",
                          b"\xe6\x97", b"\x97", b"\n", b"\r\n", b"\t", b"  ", b"42", b"</s>",
                          b"<unk>", b"<0x41>", b"<pad>", "日本".encode(), "\U0001F600".encode()])
documents = st.one_of(st.lists(pieces, max_size=20).map(b"".join), st.binary(max_size=60))


@settings(max_examples=150, deadline=None)
@given(docs=st.lists(documents, min_size=1, max_size=4), cut=st.integers(0, 3))
def test_round_trip_on_arbitrary_bytes(compressor, docs, cut):
  c = compressor
  x = np.concatenate([sym.document_symbols(d) for d in docs])
  x = x[cut:len(x) - cut]  # examples start and end anywhere, EOS or not, mid-character or not
  e = c.encode(x)
  assert e.tokens.min(initial=0) >= 0 and e.tokens.max(initial=0) < c.vocab_size
  assert e.num_bits == pytest.approx(len(e.tokens) * math.log2(c.vocab_size))
  np.testing.assert_array_equal(c.decode(e.tokens), x)
  counts = e.symbols_at_token
  assert counts[0] == 0 and counts[-1] == len(x) and np.all(np.diff(counts) >= 1)
  for t in (0, len(e.tokens) // 3, len(e.tokens) // 2):
    np.testing.assert_array_equal(c.decode_prefix(e.tokens[:t]), x[:counts[t]])


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=80))
def test_decode_agrees_with_sentencepiece_on_valid_text(compressor, text):
  tokens = compressor.encode(sym.bytes_to_symbols(text.encode("utf-8"))).tokens
  assert compressor.sp.decode(tokens.tolist()) == text


def test_eos_and_piece_layout(compressor):
  sp = compressor.sp
  x = sym.document_symbols("ka lo")
  tokens = compressor.encode(x).tokens.tolist()
  assert tokens[-1] == sp.eos_id() == 1 and sp.id_to_piece(1) == "</s>"
  # Valid text is segmented by SentencePiece itself; an invalid byte is its byte piece.
  assert tokens[:-1] == sp.encode("ka lo")
  assert compressor.encode(sym.bytes_to_symbols(b"\xff")).tokens.tolist() == [
      sp.piece_to_id("<0xFF>")]


def test_name_config_and_pickle(model_proto, tmp_path):
  path = tmp_path / "m.model"
  path.write_bytes(model_proto)
  c = spc.SentencePieceCompressor.from_file(str(path))
  assert c.name == "spm:v600" and c.vocab_size == _VOCAB
  assert c.config["model_path"] == str(path) and len(c.config["model_sha256"]) == 64
  x = sym.document_symbols(_texts(1, seed=99)[0].encode()[:-3])
  expected = c.encode(x).tokens
  clone = pickle.loads(pickle.dumps(c))
  assert clone.config == c.config
  np.testing.assert_array_equal(clone.encode(x).tokens, expected)
  np.testing.assert_array_equal(clone.decode(expected), x)
  assert spc.vocab_name(32000) == "spm:v32k"


def test_decode_rejects_non_text_ids(compressor):
  with pytest.raises(ValueError, match="outside"):
    compressor.decode(np.array([_VOCAB]))
  with pytest.raises(ValueError, match="no text"):
    compressor.decode(np.array([0]))  # <pad>


def test_small_corpus_is_padded_to_the_vocab_size():
  # The trainer yields fewer pieces than asked on too little text; the rest are unused ids.
  c = spc.SentencePieceCompressor(spc.train_sentencepiece(_texts(5, seed=3), vocab_size=2000))
  assert c.vocab_size == 2000 and c.name == "spm:v2k"
  unused = [i for i in range(c.vocab_size) if c.sp.is_unused(i)]
  assert unused and unused == list(range(unused[0], 2000))
  x = sym.document_symbols(_texts(1, seed=4)[0])
  tokens = c.encode(x).tokens
  assert tokens.max() < unused[0]
  np.testing.assert_array_equal(c.decode(tokens), x)
  with pytest.raises(ValueError, match="no text"):
    c.decode(np.array([unused[0]]))


def _train_plain(tmp_path, **options):
  """A model as SentencePiece trains it by default: NFKC, dummy prefix, no byte fallback."""
  import sentencepiece as spm
  path = tmp_path / "text.txt"
  path.write_text("\n".join(_texts(30, seed=2)), encoding="utf-8")
  spm.SentencePieceTrainer.train(input=str(path), model_prefix=str(tmp_path / "m"),
                                 vocab_size=300, minloglevel=2, character_coverage=1.0,
                                 **options)
  return spc.SentencePieceCompressor.from_file(str(tmp_path / "m.model"))


def test_model_without_byte_fallback(tmp_path):
  c = _train_plain(tmp_path)
  # Text its vocabulary covers round-trips exactly (the model runs without its NFKC and
  # dummy prefix), even with runs of spaces that its normalizer would have collapsed.
  x = sym.document_symbols("Kalo  mi ren, sa tu.")
  np.testing.assert_array_equal(c.decode(c.encode(x).tokens), x)
  with pytest.raises(ValueError, match="unk"):
    c.encode(sym.bytes_to_symbols("Zebra ✈ quartz".encode()))
  with pytest.raises(ValueError, match="byte fallback|byte-fallback"):
    c.encode(sym.bytes_to_symbols(b"ka\xff"))


def test_model_without_eos_refuses_eos(tmp_path):
  c = _train_plain(tmp_path, eos_id=-1)
  c.encode(sym.bytes_to_symbols(b"kalo"))
  with pytest.raises(ValueError, match="eos"):
    c.encode(sym.document_symbols(b"kalo"))


def test_default_corpus_slice():
  """A small model on a slice of the train split codes validation examples losslessly."""
  try:
    train = [d["text"] for d in itertools.islice(corpus.default_corpus_documents("train"), 15)]
    valid = [d["text"] for d in itertools.islice(corpus.default_corpus_documents("validation"), 3)]
  except corpus.CorpusNotInstalledError as e:
    pytest.skip(str(e))
  c = spc.SentencePieceCompressor(spc.train_sentencepiece(train, vocab_size=1000))
  examples = ex.cut_examples(ex.run_symbols(valid), 1001)  # cuts fall mid-character too
  nbytes = tokens = 0
  for x in examples:
    e = c.encode(x)
    np.testing.assert_array_equal(c.decode(e.tokens), x)
    nbytes, tokens = nbytes + len(x), tokens + len(e.tokens)
  assert nbytes / tokens > 2.0  # even 1,000 pieces compress English text
