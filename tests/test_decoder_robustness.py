"""Decoders under random and adversarial tokens: text or a clear ValueError, bounded time."""
import time

import numpy as np
import pytest

from neural_compression import methods
from neural_compression.methods import static_unigram
from neural_compression.methods import sentencepiece as spc
from neural_compression.m1 import engine as exact_engine
from tests import m1_test_checkpoints
from tests import pipeline_test_corpus as corpus_gen

SECONDS_PER_TOKEN = 0.05


@pytest.fixture(scope="module")
def compressors(tmp_path_factory):
  ckpt = m1_test_checkpoints.make_checkpoint(tmp_path_factory.mktemp("m1"))
  m1 = exact_engine.load_exact_model(ckpt)
  unigram = static_unigram.StaticUnigramModel.estimate(corpus_gen.make_documents(20, seed=4))
  proto = spc.train_sentencepiece([d["text"] for d in corpus_gen.make_documents(40)], 400)
  names = ["equal_info_ac:b16:v65k", "equal_info_ac:b24:v256:paper", "ac:v256",
           "static_equal_info_ac:b32:v65k", "static_ac:v65k", "gzip:v256", "gzip:v65k",
           "bytes", "spm:v400"]
  built = {n: methods.build_compressor(methods.parse_method(n), m1_model=m1,
                                       unigram_model=unigram, spm_model_proto=proto)
           for n in names}
  for compressor in built.values():  # the first call may compile the coder: not a decode's time
    compressor.decode(compressor.encode(np.arange(20, dtype=np.uint16)).tokens)
  return built


def token_streams(vocab: int, rng):
  yield np.zeros(64, np.int64)
  yield np.full(64, vocab - 1, np.int64)
  yield rng.integers(0, vocab, 200)
  yield rng.integers(0, vocab, 1)
  yield np.zeros(0, np.int64)
  yield np.array([0, 0, 0, 0, 255, 255, 255, 255] * 4) % vocab  # a huge AC length header


@pytest.mark.parametrize("name", ["equal_info_ac:b16:v65k", "equal_info_ac:b24:v256:paper",
                                  "ac:v256", "static_equal_info_ac:b32:v65k", "static_ac:v65k",
                                  "gzip:v256", "gzip:v65k", "bytes", "spm:v400"])
def test_random_tokens_decode_or_raise_a_clear_error(compressors, name):
  compressor = compressors[name]
  rng = np.random.default_rng(hash(name) % 2**32)
  outcomes = {"decoded": 0, "refused": 0}
  for tokens in token_streams(compressor.vocab_size, rng):
    start = time.perf_counter()
    for decode in (compressor.decode, compressor.decode_prefix):
      try:
        out = decode(tokens)
        assert out.dtype == np.uint16 and (out.size == 0 or out.max() <= 256)
        outcomes["decoded"] += 1
      except ValueError as e:
        assert str(e), "an error must say what is wrong"
        outcomes["refused"] += 1
    elapsed = time.perf_counter() - start
    assert elapsed <= SECONDS_PER_TOKEN * max(len(tokens), 1) + 1.0, (
        f"{name}: {elapsed:.2f}s for {len(tokens)} tokens")
  assert sum(outcomes.values()) == 12, outcomes
