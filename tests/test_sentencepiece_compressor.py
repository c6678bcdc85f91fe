"""SentencePiece baseline: lossless on any bytes (invalid UTF-8, U+2581, NUL, EOS), deterministic
training, picklable, and <unk> refused for models without byte fallback."""
import pickle

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from neural_compression import symbols as sym
from neural_compression.baselines import sentencepiece_compressor as spc
from tests import pipeline_test_corpus as corpus_gen


@pytest.fixture(scope="module")
def model_proto():
  texts = [d["text"] for d in corpus_gen.make_documents(60, seed=11)]
  return spc.train_sentencepiece(texts, vocab_size=600)


def test_training_is_deterministic(model_proto):
  texts = [d["text"] for d in corpus_gen.make_documents(60, seed=11)]
  assert spc.train_sentencepiece(texts, vocab_size=600) == model_proto


pieces = st.sampled_from([b"ka", b"lo ", b"The ", b"\xc3\xa9", b"\xe2\x96\x81", b"\xff", b"\x00",
                          b"\xe6\x97", b"\n", b"  ", b"42", "日本".encode()])


@settings(max_examples=120, deadline=None)
@given(docs=st.lists(st.lists(pieces, max_size=20).map(b"".join), min_size=1, max_size=4))
def test_round_trip_on_arbitrary_bytes(model_proto, docs):
  c = spc.SentencePieceCompressor(model_proto)
  x = np.concatenate([sym.document_symbols(d) for d in docs])[:-1]  # last doc without EOS
  e = c.encode(x)
  assert e.tokens.max(initial=0) < c.vocab_size
  np.testing.assert_array_equal(c.decode(e.tokens), x)
  counts = e.symbols_at_token
  assert counts[-1] == len(x)
  for t in (0, len(e.tokens) // 2):
    np.testing.assert_array_equal(c.decode(e.tokens[:t]), x[:counts[t]])


def test_picklable_and_matches_sentencepiece_on_valid_text(model_proto):
  c = pickle.loads(pickle.dumps(spc.SentencePieceCompressor(model_proto)))
  text = corpus_gen.make_documents(1, seed=99)[0]["text"]
  e = c.encode(sym.bytes_to_symbols(text.encode()))
  assert c.sp.decode(e.tokens.tolist()) == text


def test_model_without_byte_fallback_refuses_unk(tmp_path):
  import sentencepiece as spm
  path = tmp_path / "text.txt"
  path.write_text("\n".join(d["text"] for d in corpus_gen.make_documents(30, seed=2)))
  spm.SentencePieceTrainer.train(input=str(path), model_prefix=str(tmp_path / "m"),
                                 vocab_size=300, minloglevel=2, character_coverage=1.0)
  c = spc.SentencePieceCompressor((tmp_path / "m.model").read_bytes())
  with pytest.raises(ValueError, match="unk|byte fallback"):
    c.encode(sym.bytes_to_symbols("Zebra ✈ quartz".encode()))
