"""Vocabularies: the id layout, text <-> ids through each method, TF ops, identity, artifacts."""
from __future__ import annotations

import json
import pathlib
import pickle
import shutil

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest
import seqio
import tensorflow as tf

import seqio_tasks
from neural_compression import methods
from neural_compression import symbols as sym
from seqio_tasks import data
from seqio_tasks import vocabularies

# method -> its own vocabulary size (raw tokens), before the 3 reserved ids.
METHOD_VOCAB = {"static_equal_info_ac:b16:v65k": 65536, "static_equal_info_ac:b32:v256": 256,
                "static_ac:v256": 256, "gzip:v256": 256, "bytes": 257, "spm:v400": 400}
TEXTS = ["", "a", "Hello, world.", "Naïve café: ü, ß, 日本, emoji \U0001F600.",
         "two documents<EOS>the second one<EOS>", "x" * 700]


@pytest.mark.parametrize("method", sorted(METHOD_VOCAB))
def test_id_layout(run_dir, method):
  vocab = seqio_tasks.vocabulary_for(method)
  assert (vocab.pad_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2)
  assert vocab.vocab_size == METHOD_VOCAB[method] + 3
  assert vocab.extra_ids == 0
  assert isinstance(vocab, seqio.Vocabulary)


def test_families():
  expected = {"equal_info_ac:b16:v65k": vocabularies.M1ArithmeticVocabulary,
              "ac:v65k": vocabularies.M1ArithmeticVocabulary,
              "static_ac:v256": vocabularies.StaticArithmeticVocabulary,
              "static_equal_info_ac:b64:v256:paper": vocabularies.StaticArithmeticVocabulary,
              "gzip:v65k": vocabularies.GzipVocabulary, "bytes": vocabularies.BytesVocabulary,
              "spm:v32k": vocabularies.SentencePieceVocabulary}
  for method, cls in expected.items():
    assert type(seqio_tasks.vocabulary_for(method)) is cls
  with pytest.raises(methods.MethodError):
    vocabularies.GzipVocabulary("bytes")


@pytest.mark.parametrize("method", sorted(METHOD_VOCAB))
def test_text_round_trip_and_the_compressor(run_dir, method):
  vocab = seqio_tasks.vocabulary_for(method)
  for text in TEXTS:
    ids = vocab.encode(text)
    assert all(vocabularies.ID_OFFSET <= i < vocab.vocab_size for i in ids)
    assert vocab.decode(ids) == text
    symbols = vocabularies.text_to_symbols(text)
    raw = vocab.compressor.encode(symbols).tokens
    assert ids == (np.asarray(raw) + 3).tolist()
    np.testing.assert_array_equal(vocab.decode_symbols(ids, strict=True), symbols)


@pytest.mark.parametrize("method", ["static_ac:v256", "gzip:v256", "spm:v400"])
def test_decode_strips_pad_and_stops_at_eos(run_dir, method):
  vocab = seqio_tasks.vocabulary_for(method)
  ids = vocab.encode("Some text<EOS>More")
  assert vocab.decode(ids + [1, 0, 0, 0]) == "Some text<EOS>More"
  # seqio's decode stops at the first EOS id; what follows is never decoded.
  assert vocab.decode(ids + [1] + ids) == "Some text<EOS>More"
  assert vocab.decode([]) == ""


def test_tf_encode_and_decode_match_python(run_dir):
  vocab = seqio_tasks.vocabulary_for("static_equal_info_ac:b16:v65k")
  texts = ["first text here", "Naïve café<EOS>next"]
  ds = tf.data.Dataset.from_tensor_slices(texts).map(vocab.encode_tf)
  encoded = [x.tolist() for x in ds.as_numpy_iterator()]
  assert encoded == [vocab.encode(t) for t in texts]
  assert ds.element_spec.dtype == tf.int32
  decoded = tf.data.Dataset.from_tensor_slices(tf.ragged.constant(encoded)).map(
      lambda ids: vocab.decode_tf(ids))
  assert [d.decode() for d in decoded.as_numpy_iterator()] == texts
  # Batched, padded ids [batch, length] decode to [batch] strings, padding ignored.
  width = max(map(len, encoded)) + 2
  batch = tf.constant([ids + [0] * (width - len(ids)) for ids in encoded], tf.int32)
  out = vocab.decode_tf(batch)
  assert out.shape == (2,)
  assert [s.decode() for s in out.numpy()] == texts


def test_records_decode_through_tf(run_dir):
  task = seqio.get_mixture_or_task("c4_static_ac_v256")
  vocab = task.output_features["targets"].vocabulary
  ds = task.get_dataset({"targets": 128}, split="validation", shuffle=False)
  for e in ds.take(2).as_numpy_iterator():
    assert vocab.decode_tf(tf.constant(e["targets"])).numpy().decode() == vocab.decode(
        e["targets"].tolist())


def test_equality_and_hashing():
  a = seqio_tasks.vocabulary_for("static_ac:v256")
  assert a is seqio_tasks.vocabulary_for("static_ac:v256")
  b = vocabularies.StaticArithmeticVocabulary("static_ac:v256", data_dir="/somewhere/else")
  assert a == b and hash(a) == hash(b)
  assert a != seqio_tasks.vocabulary_for("static_ac:v65k")
  assert a != seqio_tasks.vocabulary_for("static_equal_info_ac:b16:v256")
  assert a != seqio.PassThroughVocabulary(259)
  assert len({a, b, seqio_tasks.vocabulary_for("gzip:v256")}) == 2
  # Canonical names: 'v65536' and 'v65k' are one method.
  assert seqio_tasks.vocabulary_for("gzip:v65536") is seqio_tasks.vocabulary_for("gzip:v65k")


def test_pickle_round_trip(run_dir):
  vocab = seqio_tasks.vocabulary_for("gzip:v256")
  ids = vocab.encode("pickled")
  copy = pickle.loads(pickle.dumps(vocab))
  assert copy == vocab and copy.decode(ids) == "pickled"


def test_lenient_and_strict_decoding(run_dir):
  vocab = seqio_tasks.vocabulary_for("gzip:v256")
  good = vocab.encode("a perfectly fine prefix " * 4)
  garbage = good[:10] + [3 + 0xFF] * 12 + good[10:]
  with pytest.raises(ValueError):
    vocab.decode_symbols(garbage, strict=True)
  text = vocab.decode(garbage)  # a model's bad sample must not crash evaluation
  # The tokens before the damage still decode (deflate streams), then decoding stops.
  assert isinstance(text, str) and text.startswith("a perf")


def test_artifacts_are_found_by_the_manifest_checksum(run_dir, tmp_path):
  copy = tmp_path / "run"
  shutil.copytree(run_dir, copy)
  (unigram,) = (copy / "artifacts").glob("static_unigram-*.json")
  # The copy's manifest records its own artifact files (the run's point to the original).
  manifest = json.loads((copy / "manifest.json").read_text())
  for info in manifest["artifacts"].values():
    info["file"] = str(copy / "artifacts" / pathlib.Path(info["file"]).name)
  (copy / "manifest.json").write_text(json.dumps(manifest))
  vocab = vocabularies.StaticArithmeticVocabulary("static_ac:v256", data_dir=str(copy))
  ids = seqio_tasks.vocabulary_for("static_ac:v256").encode("checksum")
  assert vocab.decode(ids) == "checksum"
  # Another file under the same name is not the run's model: refuse rather than misdecode.
  unigram.write_text(unigram.read_text().replace('"source": "', '"source": "x'))
  vocabularies.clear_cache()  # built compressors are shared by artifact checksum
  fresh = vocabularies.StaticArithmeticVocabulary("static_ac:v256", data_dir=str(copy))
  with pytest.raises(data.MissingDataError, match="sha256"):
    fresh.decode(ids)
  spm = vocabularies.SentencePieceVocabulary("spm:v400", data_dir=str(copy))
  for model in (copy / "artifacts").glob("spm_v400-*.model"):
    model.unlink()
  with pytest.raises(data.MissingDataError, match="--methods=spm:v400"):
    spm.decode([3, 4])


def test_padded_vocab_size():
  assert seqio_tasks.padded_vocab_size(seqio_tasks.vocabulary_for("gzip:v65k")) == 65664
  assert seqio_tasks.padded_vocab_size(seqio_tasks.vocabulary_for("gzip:v256")) == 384
  assert seqio_tasks.padded_vocab_size(seqio_tasks.vocabulary_for("gzip:v256"), 1) == 259


_runs = st.lists(st.one_of(st.text(max_size=20).filter(lambda s: "<EOS>" not in s),
                           st.just(None)), max_size=6)


@hypothesis.given(_runs)
@hypothesis.settings(max_examples=200, deadline=None)
def test_symbols_text_rendering_is_reversible_on_valid_text(parts):
  # Symbols whose byte runs are valid UTF-8 render to text and back exactly.
  pieces = []
  for p in parts:
    pieces.append(sym.bytes_to_symbols(p.encode("utf-8")) if p is not None
                  else np.asarray([sym.EOS], sym.SYMBOL_DTYPE))
  symbols = np.concatenate(pieces) if pieces else np.zeros(0, sym.SYMBOL_DTYPE)
  text = vocabularies.symbols_to_text(symbols)
  np.testing.assert_array_equal(vocabularies.text_to_symbols(text), symbols)


def test_invalid_utf8_renders_with_replacement():
  # An example boundary can cut a character: display text never raises.
  symbols = sym.bytes_to_symbols("日本".encode()[:4])
  assert vocabularies.symbols_to_text(symbols) == "日\ufffd"
