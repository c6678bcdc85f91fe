"""The exact M1 engine: CDFs identical across batch sizes, orders, padding, cache states and
backends; encodings made at batch 512 decode at batch 1; corrupt checkpoints are refused."""
import hashlib
import importlib.util
import inspect
import json
import os
import pathlib
import re
import subprocess
import sys
import types

from numba.core.registry import CPUDispatcher as Dispatcher
import numpy as np
import pytest

from neural_compression.methods import arithmetic as acc
from neural_compression.coding import cdf_models
from neural_compression import examples as ex
from neural_compression.m1 import engine as ee
from neural_compression.m1.engine import int8_gemm
from neural_compression.m1.engine.compiled_forward import INT_GEMM_MAX_ROWS
from neural_compression.m1 import exact_quantization as eq
from neural_compression.m1 import numpy_inference as ni
from tests import m1_test_checkpoints as ckpts
from tests import pipeline_test_corpus as corpus_gen

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  return ckpts.make_checkpoint(tmp_path_factory.mktemp("m1"))


@pytest.fixture(scope="module")
def contexts():
  return ckpts.validation_contexts(512)


@pytest.fixture(scope="module")
def reference(checkpoint, contexts):
  """CDFs computed one context at a time by a fresh numpy engine."""
  model = ee.load_exact_model(checkpoint, backend="numpy")
  return np.stack([model.cdf(c) for c in contexts])


def test_cdfs_are_valid(reference):
  for cdf in reference[:50]:
    cdf_models.validate_cdf(cdf, ee.PRECISION_BITS)


def assert_batch_invariant(model, contexts, reference, batch):
  """Feeds the contexts in shuffled batches of `batch` rows; every CDF must equal the reference."""
  order = np.random.default_rng(batch).permutation(len(contexts))
  out = np.zeros_like(reference)
  for start in range(0, len(order), batch):
    rows = order[start:start + batch]
    out[rows] = model.cdfs([contexts[i] for i in rows])
  mismatched = int((out != reference).any(axis=1).sum())
  assert mismatched == 0, f"{mismatched} of {len(contexts)} CDFs differ at batch {batch}"


@pytest.mark.parametrize("batch", [1, 7, 64, 512])
def test_batch_size_and_row_order_do_not_change_any_cdf(checkpoint, contexts, reference, batch):
  assert_batch_invariant(ee.load_exact_model(checkpoint, backend="numpy"), contexts, reference,
                         batch)


def test_cache_eviction_and_row_limits_do_not_change_any_cdf(checkpoint, contexts, reference):
  small = ee.load_exact_model(checkpoint, backend="numpy").cache.node_bytes * 1100
  model = ee.load_exact_model(checkpoint, backend="numpy", max_cache_bytes=small, max_rows=3)
  out = model.cdfs(contexts[::-1])[::-1]
  assert np.array_equal(out, reference)
  assert model.stats["computed"] > 0 and model.stats["evictions"] > 0
  # Encoding through a session under the same small budget evicts mid-batch: same tokens.
  # (More distinct window prefixes than the 1,100 nodes hold: rows run on while cached, so only
  # a batch whose prefixes do not fit evicts.)
  docs = [d["text"] for d in corpus_gen.make_documents(12, seed=21)]
  examples = list(ex.examples_from_documents(docs, example_symbols=300))[:40]
  # b=128: this random M1 spends ~8 bits per symbol, so windows of ~16 symbols.
  want = acc.EqualInfoACCompressor(ee.load_exact_model(checkpoint), 128, 16).encode_batch(examples)
  evictions = model.stats["evictions"]
  got = acc.EqualInfoACCompressor(model, 128, 16).encode_batch(examples * 3)
  assert model.stats["evictions"] > evictions
  for g, w in zip(got, want * 3):
    np.testing.assert_array_equal(g.tokens, w.tokens)


def test_the_hash_table_grows_with_the_nodes_and_finds_every_one(checkpoint):
  """The table starts small and doubles as nodes arrive (then eviction takes over at the
  budget): the tokens equal those of a model whose table had its full size from the start, and
  without evictions so do the positions computed (a node lost by a regrowth would be computed
  again; with evictions, which nodes go depends on when each model ran out of room)."""
  docs = [d["text"] for d in corpus_gen.make_documents(12, seed=22)]
  examples = list(ex.examples_from_documents(docs, example_symbols=300))[:40]
  node_bytes = ee.load_exact_model(checkpoint).cache.node_bytes
  for nodes in (40_000, 5_000):  # room to spare; the budget reached after two regrowths
    growing = ee.load_exact_model(checkpoint, max_cache_bytes=node_bytes * nodes)
    full = ee.load_exact_model(checkpoint, max_cache_bytes=node_bytes * nodes)
    first_slots = growing.cache.table.shape[0]
    full.cache.make_room(full.cache.capacity - full.cache.num_nodes, np.zeros(0, np.int64))
    assert full.cache.room == full.cache.capacity and full.cache.evictions == 0
    got = acc.EqualInfoACCompressor(growing, 128, 16).encode_batch(examples)
    want = acc.EqualInfoACCompressor(full, 128, 16).encode_batch(examples)
    for g, w in zip(got, want):
      np.testing.assert_array_equal(g.tokens, w.tokens)
    assert growing.cache.table.shape[0] >= 4 * first_slots
    if nodes == 5_000:
      assert growing.stats["evictions"] > 0 and full.stats["evictions"] > 0
    else:
      assert growing.stats["evictions"] == full.stats["evictions"] == 0
      assert growing.stats["computed"] == full.stats["computed"] == growing.cache.num_nodes


def test_a_cache_below_its_minimum_is_refused(checkpoint):
  with pytest.raises(ValueError, match="prefix cache"):
    ee.load_exact_model(checkpoint, max_cache_bytes=1 << 20)


def test_jax_backend_gives_identical_cdfs(checkpoint, contexts, reference):
  pytest.importorskip("jax")
  model = ee.load_exact_model(checkpoint, backend="jax")
  rows = list(range(0, len(contexts), 8))
  out = model.cdfs([contexts[i] for i in rows])
  mismatched = int((out != reference[rows]).any(axis=1).sum())
  assert mismatched == 0, f"{mismatched} of {len(rows)} JAX CDFs differ from numpy"


def test_exact_cdfs_track_the_float_model(checkpoint, contexts, reference):
  float_model = ni.load_model(checkpoint)
  logp = float_model.next_symbol_log_probs(contexts[:100]).astype(np.float64)
  q = np.diff(reference[:100], axis=1) / 2.0 ** ee.PRECISION_BITS
  kl_bits = np.sum(np.exp(logp) * (logp / np.log(2) - np.log2(q)), axis=1)
  assert kl_bits.mean() < 0.05, f"mean KL(float || exact) = {kl_bits.mean():.4f} bits/symbol"


def test_batch_512_encodings_decode_at_batch_1(checkpoint):
  docs = [d["text"] for d in corpus_gen.make_documents(6, seed=3)]
  examples = list(ex.examples_from_documents(docs, example_symbols=700))
  big = acc.EqualInfoACCompressor(ee.load_exact_model(checkpoint), 16, 16)
  encoded = big.encode_batch(examples)
  single = acc.EqualInfoACCompressor(ee.load_exact_model(checkpoint, max_rows=1), 16, 16)
  for x, e in zip(examples, encoded):
    np.testing.assert_array_equal(single.decode(e.tokens), x)
    np.testing.assert_array_equal(single.encode(x).tokens, e.tokens)


def test_corrupt_or_missing_exact_model_is_refused(checkpoint, tmp_path):
  import shutil
  copy = tmp_path / "ckpt"
  shutil.copytree(checkpoint, copy)
  data = bytearray((copy / eq.EXACT_FILE).read_bytes())
  data[len(data) // 2] ^= 1
  (copy / eq.EXACT_FILE).write_bytes(bytes(data))
  with pytest.raises(ee.ExactCheckpointError, match="sha256"):
    ee.verify_checkpoint(copy)
  (copy / eq.EXACT_CONFIG_FILE).unlink()
  with pytest.raises(ee.ExactCheckpointError, match="missing"):
    ee.verify_checkpoint(copy)
  doc = json.loads((copy / ni.CONFIG_FILE).read_text())
  doc["weights_sha256"] = "0" * 64
  (copy / ni.CONFIG_FILE).write_text(json.dumps(doc))
  with pytest.raises(ni.CheckpointError):
    ee.verify_checkpoint(copy)


def test_attention_window_is_the_checkpoints_training_context(checkpoint, tmp_path):
  shipped = REPO_ROOT / "m1_checkpoint"
  assert ee.context_length(shipped) == 512  # recorded only in its training command
  assert ee.load_exact_model(shipped, max_cache_bytes=8 << 20).engine.max_context == 512
  assert ee.context_length(checkpoint) == ee.PAPER_CONTEXT  # records none: the paper's
  trained = ckpts.make_checkpoint(tmp_path / "trained", context_length=48)
  assert ee.context_length(trained) == 48
  model = ee.load_exact_model(trained, backend="numpy")
  assert model.engine.max_context == 48
  wide = ee.load_exact_model(trained, backend="numpy", max_context=ee.PAPER_CONTEXT)
  data = " ".join(d["text"] for d in corpus_gen.make_documents(2, seed=4)).encode()
  x = np.frombuffer(data[:160], np.uint8).astype(np.uint16)
  # Within the window both see the same positions; past it the 48-symbol model must not.
  np.testing.assert_array_equal(model.cdf(x[:47]), wide.cdf(x[:47]))
  assert any(not np.array_equal(model.cdf(x[:n]), wide.cdf(x[:n])) for n in (100, 130, 159))
  with pytest.raises(ValueError, match="max_context"):
    ee.load_exact_model(trained, max_context=0)


@pytest.mark.parametrize("backend", ["numpy", "compiled"])
@pytest.mark.parametrize("window", [None, 40])
def test_lockstep_path_equals_prefix_cache_path_past_the_context_limit(checkpoint, window,
                                                                       backend):
  """The compiled backend attends over the int8 lockstep buffer in place, numpy over float32
  slices of it; both must equal the numpy prefix-cache path."""
  data = " ".join(d["text"] for d in corpus_gen.make_documents(3, seed=5)).encode()
  model = ee.load_exact_model(checkpoint, max_context=window, backend=backend)
  cache_model = ee.load_exact_model(checkpoint, max_context=window, backend="numpy")
  window = model.engine.max_context
  # Past 2 windows the lockstep buffer has slid at least once.
  x = np.frombuffer(data[:2 * window + 60 if window < 100 else window + 60], np.uint8).astype(
      np.uint16)
  session = model.lockstep(2)
  checked = 0
  for i in range(len(x)):
    tokens = np.array([ni.BOS if i == 0 else x[i - 1]] * 2)
    got = session.step(tokens)
    if i % 97 == 0 or i > window - 3:
      np.testing.assert_array_equal(got[0], cache_model.cdf(x[:i]), err_msg=f"position {i}")
      np.testing.assert_array_equal(got[1], got[0])
      checked += 1
  assert checked > 60


def test_ac_with_m1_round_trips(checkpoint):
  docs = [d["text"] for d in corpus_gen.make_documents(3, seed=9)]
  examples = list(ex.examples_from_documents(docs, example_symbols=500))[:3]
  compressor = acc.ArithmeticCodingCompressor(ee.load_exact_model(checkpoint), 16)
  for x, e in zip(examples, compressor.encode_batch(examples)):
    np.testing.assert_array_equal(compressor.decode(e.tokens), x)
    np.testing.assert_array_equal(compressor.encode(x).tokens, e.tokens)


def test_ac_tokens_do_not_depend_on_how_many_rows_run_in_lockstep(checkpoint, monkeypatch):
  """Rows of unequal lengths in one lockstep batch of LOCKSTEP_ROWS, in batches of 3, 2 (capped
  by LOCKSTEP_SYMBOLS) and one at a time: the same tokens (the short rows are padded while the
  long ones go on)."""
  docs = [d["text"] for d in corpus_gen.make_documents(12, seed=10)]
  examples = [x[:40 + 37 * i] for i, x in enumerate(
      ex.examples_from_documents(docs, example_symbols=600))][:18]
  assert len(examples) == 18 <= acc.LOCKSTEP_ROWS
  compressor = acc.ArithmeticCodingCompressor(ee.load_exact_model(checkpoint), 16)
  want = [e.tokens for e in compressor.encode_batch(examples)]
  for rows in (3, 1):
    monkeypatch.setattr(acc, "LOCKSTEP_ROWS", rows)
    for w, g in zip(want, compressor.encode_batch(examples)):
      np.testing.assert_array_equal(g.tokens, w)
  # Long examples run fewer rows at once (LOCKSTEP_SYMBOLS bounds the code buffers): 2 here.
  monkeypatch.setattr(acc, "LOCKSTEP_ROWS", 64)
  monkeypatch.setattr(acc, "LOCKSTEP_SYMBOLS", 2 * max(len(x) for x in examples) + 1)
  sessions, lockstep = [], compressor.model.lockstep
  monkeypatch.setattr(compressor.model, "lockstep",
                      lambda rows: sessions.append(rows) or lockstep(rows))
  for w, g in zip(want, compressor.encode_batch(examples)):
    np.testing.assert_array_equal(g.tokens, w)
  assert sessions == [2] * 9


def test_logits_to_cdf_is_the_largest_remainder_quantization(checkpoint):
  engine = ee.load_exact_model(checkpoint).engine
  rng = np.random.default_rng(0)
  z = rng.integers(-3000, 3000, (40, 257)).astype(np.int64)
  z[0] = 0  # all ties
  z[1, 5] = 10 ** 6  # one near-certain symbol
  got = engine._logits_to_cdf(z)  # pylint: disable=protected-access
  table = engine.p["logit_exp"]
  for row, cdf in zip(z, got):
    weights = table[np.minimum(row.max() - row, len(table) - 1)]
    np.testing.assert_array_equal(cdf, cdf_models.counts_to_cdf(weights, ee.PRECISION_BITS))


def test_exact_model_from_other_float_weights_is_refused(checkpoint, tmp_path):
  import shutil
  copy = tmp_path / "ckpt"
  shutil.copytree(checkpoint, copy)
  config, params, _ = ni.load_checkpoint(copy)
  params["output/kernel"] = params["output/kernel"] * 2
  ni.save_checkpoint(copy, config, params)  # new float weights, old exact export
  with pytest.raises(ee.ExactCheckpointError, match="export_exact"):
    ee.verify_checkpoint(copy)


def test_shipped_m1_on_validation_text_is_batch_invariant():
  """The determinism matrix with the shipped checkpoint on the default corpus's validation split."""
  from neural_compression import corpus
  shipped = REPO_ROOT / "m1_checkpoint"
  text = next(corpus.default_corpus_documents("validation"))["text"].encode()
  rng = np.random.default_rng(0)
  contexts = []
  for _ in range(512):
    start = int(rng.integers(0, len(text) - 40))
    contexts.append(np.frombuffer(text[start:start + int(rng.integers(0, 33))],
                                  np.uint8).astype(np.uint16))
  reference = ee.load_exact_model(shipped).cdfs(contexts)
  for batch in (1, 7, 64, 512):
    assert_batch_invariant(ee.load_exact_model(shipped), contexts, reference, batch)
  numpy_reference = ee.load_exact_model(shipped, backend="numpy").cdfs(contexts)
  assert np.array_equal(reference, numpy_reference), "auto (compiled) CDFs differ from numpy"
  if importlib.util.find_spec("jax") is not None:
    rows = list(range(0, 512, 4))
    out = ee.load_exact_model(shipped, backend="jax").cdfs([contexts[i] for i in rows])
    mismatched = int((out != reference[rows]).any(axis=1).sum())
    assert mismatched == 0, f"{mismatched} of {len(rows)} JAX CDFs differ from numpy"
  # Validation examples encoded together (one row each) decode one at a time, one window per row.
  docs = [d["text"] for d in corpus.default_corpus_documents("validation")]
  examples = [x[:1500] for x in ex.examples_from_documents(docs)][:8]
  encoded = acc.EqualInfoACCompressor(ee.load_exact_model(shipped), 16, 16).encode_batch(examples)
  single = acc.EqualInfoACCompressor(ee.load_exact_model(shipped, max_rows=1), 16, 16)
  for x, e in zip(examples, encoded):
    np.testing.assert_array_equal(single.decode(e.tokens), x)


def test_a_decode_inside_a_jax_process_leaves_process_settings_as_found(checkpoint):
  """Library code must not change process-wide settings (a vocabulary decoding inside a T5X
  training process): jax_enable_x64 and the BLAS thread limits are as found after every call,
  while the engine still computes single-threaded."""
  jax = pytest.importorskip("jax")
  import threadpoolctl

  def blas_threads():
    return sorted({p["num_threads"] for p in threadpoolctl.threadpool_info()
                   if p["user_api"] == "blas"})

  docs = [d["text"] for d in corpus_gen.make_documents(2, seed=11)]
  x = next(iter(ex.examples_from_documents(docs, example_symbols=300)))
  tokens = acc.EqualInfoACCompressor(ee.load_exact_model(checkpoint, backend="numpy"), 16,
                                     16).encode(x).tokens
  x64 = bool(jax.config.jax_enable_x64)
  seen = []
  with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
    before = blas_threads()
    for backend in ("numpy", "jax"):
      model = ee.load_exact_model(checkpoint, backend=backend)
      forward = model.engine.forward

      def spy(*args, forward=forward):
        seen.append(blas_threads())
        return forward(*args)

      model.engine.forward = spy
      np.testing.assert_array_equal(acc.EqualInfoACCompressor(model, 16, 16).decode(tokens), x)
      ac = acc.ArithmeticCodingCompressor(model, 16)
      np.testing.assert_array_equal(ac.decode(ac.encode(x[:40]).tokens), x[:40])
      assert bool(jax.config.jax_enable_x64) == x64, f"{backend} changed jax_enable_x64"
      assert blas_threads() == before, f"{backend} left the BLAS thread limits changed"
  assert seen and all(s == [1] for s in seen), "the engine's own BLAS cap no longer applies"


def test_auto_backend_on_a_machine_without_gpu_nodes_never_imports_jax(checkpoint):
  # JAX's import costs every CPU worker seconds; without a GPU device node it is not needed.
  from neural_compression.m1.engine import jax_backend
  if any(os.path.exists(p) for p in jax_backend.GPU_DEVICE_PATHS):
    pytest.skip("this machine shows a GPU device node")
  script = ("import sys; from neural_compression.m1 import engine; "
            f"m = engine.load_exact_model({str(checkpoint)!r}, backend='auto'); "
            "assert m.engine.backend.name != 'jax'; assert 'jax' not in sys.modules, 'imported'")
  subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO_ROOT)


# The compiled CPU backend (compiled_forward): the numpy reference's integers, bit for bit ------

def _forward_pair(arrays, doc, max_context=ee.PAPER_CONTEXT):
  from neural_compression.m1.engine.compiled_forward import CompiledBackend
  return (ee.ExactM1(arrays, doc, ee.NumpyBackend, max_context=max_context),
          ee.ExactM1(arrays, doc, CompiledBackend, max_context=max_context))


def _assert_same_outputs(got, want, what):
  for name, g, w in zip(("keys", "values"), got[:2], want[:2]):
    for layer, (gl, wl) in enumerate(zip(g, w)):
      assert gl.dtype == np.int8 and np.array_equal(gl, wl), f"{what}: layer {layer} new {name}"
  assert got[2].dtype == np.int64
  mismatched = int((got[2] != want[2]).any(axis=1).sum())
  assert mismatched == 0, f"{what}: {mismatched} of {len(want[2])} CDFs differ"


def _adversarial_arrays(arrays):
  """Requantization multipliers x 16: q, k, v, the MLP hidden and the residual updates clip at
  +-127 (or saturate) in many places; relative biases x 8 spread the attention scores."""
  out = dict(arrays)
  for name, a in arrays.items():
    if name.rsplit("/", 1)[-1] in ("mq", "mk", "mv", "mi", "mo", "md"):
      out[name] = (a * np.float32(16)).astype(np.float32)
    if name.endswith("rel_bias"):
      out[name] = a * 8
  return out


@pytest.fixture(params=["int8_gemm", "blas_and_int_gemm"])
def gemm_path(request, monkeypatch):
  """The compiled forward's GEMMs: int8_gemm (AVX-512 VNNI), or where numba's target lacks it,
  BLAS and int_gemm (forced here by hiding VNNI)."""
  if request.param == "int8_gemm" and not int8_gemm.SUPPORTED:
    pytest.skip("numba does not target AVX-512 VNNI on this CPU")
  if request.param == "blas_and_int_gemm":
    monkeypatch.setattr(int8_gemm, "SUPPORTED", False)
  return request.param


@pytest.mark.parametrize("adversarial", [False, True])
@pytest.mark.parametrize("rows,history", [(1, 0), (1, 9), (5, 1), (INT_GEMM_MAX_ROWS, 12),
                                          (INT_GEMM_MAX_ROWS + 1, 12), (32, 12), (64, 40),
                                          (300, 17), (3, 600),
                                          (2, 1100)])
def test_compiled_forward_equals_numpy_on_random_histories(checkpoint, adversarial, rows,
                                                           history, gemm_path):
  """Random int8 histories of mixed lengths (left-aligned, padded with garbage): new keys,
  values and CDFs identical; 1,100 positions pass EXACT_K, where numpy chunks its sums. Both GEMM
  paths: int8_gemm at every row count; without it, up to INT_GEMM_MAX_ROWS rows int_gemm, from
  one more BLAS."""
  arrays, doc = ee.load_exact_arrays(checkpoint)
  if adversarial:
    arrays = _adversarial_arrays(arrays)
  reference, compiled = _forward_pair(arrays, doc)
  forward = compiled._compiled  # pylint: disable=protected-access
  assert bool(forward.packed) == (gemm_path == "int8_gemm")
  c = reference.config
  rng = np.random.default_rng(rows * 1000 + history)
  shape = (rows, history, c.num_heads, c.head_dim)
  hist_k = [rng.integers(-127, 128, shape).astype(np.float32) for _ in range(c.num_layers)]
  hist_v = [rng.integers(-127, 128, shape).astype(np.float32) for _ in range(c.num_layers)]
  hist_len = rng.integers(0, history + 1, rows)
  hist_len[0] = history
  tokens = rng.integers(0, reference.config.vocab_size, rows)
  want = reference.forward(tokens, hist_k, hist_v, hist_len)
  if adversarial and history:
    clipped = sum(int((np.abs(k) == 127).sum()) for k in want[0])
    assert clipped > 0, "the adversarial checkpoint should clip keys at +-127"
  _assert_same_outputs(compiled.forward(tokens, hist_k, hist_v, hist_len), want,
                       f"forward rows={rows} history={history}")
  # The same histories read in place from shuffled int8 storage by index (the prefix cache's
  # and the lockstep buffer's path); padding slots point at nonzero garbage.
  n = rows * history
  perm = rng.permutation(n + 1)
  storage_k = [np.zeros((n + 1, c.num_heads, c.head_dim), np.int8) for _ in hist_k]
  storage_v = [np.zeros_like(s) for s in storage_k]
  for sk, sv, k, v in zip(storage_k, storage_v, hist_k, hist_v):
    sk[perm[:n]] = k.reshape(n, c.num_heads, c.head_dim)
    sv[perm[:n]] = v.reshape(n, c.num_heads, c.head_dim)
    sk[perm[n]] = sv[perm[n]] = 77
  hist_idx = perm[:n].reshape(rows, history)
  hist_idx = np.where(np.arange(history)[None, :] < hist_len[:, None], hist_idx, perm[n])
  _assert_same_outputs(compiled.forward_gather(tokens, storage_k, storage_v, hist_idx, hist_len),
                       want, f"forward_gather rows={rows} history={history}")
  _assert_same_outputs(reference.forward_gather(tokens, storage_k, storage_v, hist_idx,
                                                hist_len), want, "numpy forward_gather")


def test_compiled_attention_keeps_exactly_the_keys_of_nonzero_probability(checkpoint):
  """Zero queries and relative biases make every key's weight equal: with n history keys, m =
  n + 1 weights in the total, each gets probability (254 + m) // (2 m): 1 for 85 <= m <= 254
  (at n = 253 exactly on the boundary 254 w == total), 0 beyond, more for short histories (n =
  1: 64). The compiled attention keeps only the nonzero ones; values at +-127 (one row all
  +127) make its int32 sums as large as they get (~253 * 127). Keys, values and CDFs must
  equal the numpy reference's on both sides of the boundary."""
  arrays, doc = ee.load_exact_arrays(checkpoint)
  arrays = dict(arrays)
  for name in list(arrays):
    if name.endswith("/wq") or name.endswith("rel_bias"):
      arrays[name] = np.zeros_like(arrays[name])
  reference, compiled = _forward_pair(arrays, doc)
  c = reference.config
  history = 256
  rng = np.random.default_rng(7)
  hist_len = np.array([252, 253, 254, 255, 256, 1], np.int64)
  rows = len(hist_len)
  shape = (rows, history, c.num_heads, c.head_dim)
  hist_k = [rng.integers(-127, 128, shape).astype(np.float32) for _ in range(c.num_layers)]
  hist_v = [(127 * rng.choice([-1, 1], shape)).astype(np.float32) for _ in range(c.num_layers)]
  for v in hist_v:
    v[0] = 127  # one row's values all at +127: its sums at their largest
  tokens = rng.integers(0, c.vocab_size, rows)
  want = reference.forward(tokens, hist_k, hist_v, hist_len)
  _assert_same_outputs(compiled.forward(tokens, hist_k, hist_v, hist_len), want,
                       "uniform attention around the zero-probability boundary")


@pytest.mark.parametrize("name,change", [
    ("attn_exp", lambda t: np.where(np.arange(len(t)) % 2 == 1, -t, t)),  # negative weights
    ("attn_exp", lambda t: np.concatenate([t, [0]])),  # another length than the reference's
    ("attn_exp", lambda t: np.zeros_like(t)),  # no key could get weight: total 0
    ("logit_exp", lambda t: t[:-1])])
def test_compiled_backend_refuses_exp_tables_its_shortcuts_do_not_hold_for(checkpoint, name,
                                                                           change):
  """The compiled kernels clamp table indices to the table's end and skip keys of probability 0
  by 254 w < total: exact for the reference's table lengths, weights >= 0 and a first entry
  > 0 (every export has them). Any other table is refused at load, not computed differently."""
  from neural_compression.m1.engine.compiled_forward import CompiledBackend
  arrays, doc = ee.load_exact_arrays(checkpoint)
  arrays = dict(arrays)
  arrays[name] = change(np.asarray(arrays[name]))
  with pytest.raises(ValueError, match=name):
    ee.ExactM1(arrays, doc, CompiledBackend)


def test_compiled_forward_refuses_history_lengths_past_its_index(checkpoint):
  """hist_len beyond hist_idx's columns would read past the index (and the relative-bias
  table): refused before any kernel runs."""
  arrays, doc = ee.load_exact_arrays(checkpoint)
  _, compiled = _forward_pair(arrays, doc)
  c = compiled.config
  storage = [np.zeros((4, c.num_heads, c.head_dim), np.int8)] * c.num_layers
  with pytest.raises(ValueError, match="hist_len"):
    compiled.forward_gather(np.zeros(2, np.int64), storage, storage,
                            np.zeros((2, 3), np.int64), np.array([3, 4]))


def test_compiled_requantization_rounds_half_to_even_like_numpy():
  """Every product that lands on a tie k + 1/2 (and random ones) rounds as np.round does."""
  from neural_compression.m1.engine import compiled_forward as cf
  ties = np.arange(-(1 << 12), 1 << 12, dtype=np.float32) * 2 + 1  # odd integers
  rng = np.random.default_rng(0)
  acc = np.concatenate([ties, rng.integers(-(1 << 23), 1 << 23, 8192).astype(np.float32)])
  for mult in (np.float32(0.5), np.float32(1.5), np.float32(0.0012345), np.float32(0.0625)):
    mults = np.full(len(acc), mult, np.float32)
    out = np.empty((1, len(acc)), np.int8)
    cf.requant_int8(acc[None], mults, out)
    want = np.clip(np.round(acc * mults), -127, 127)
    np.testing.assert_array_equal(out[0], want.astype(np.int8))
    hidden = np.empty((1, len(acc)), np.float32)
    cf.mlp_hidden(acc[None], np.zeros(len(acc), np.int64), mults, hidden)
    np.testing.assert_array_equal(hidden[0], np.clip(np.round(
        np.maximum(acc, 0).astype(np.float32) * mults), 0, 127))
    h = np.zeros((1, len(acc)), np.int64)
    cf.residual_layer_norm(h, acc[None], mults, np.zeros(len(acc), np.int64),
                           np.ones(len(acc), np.int64), np.zeros(len(acc), np.int64), 1,
                           np.empty((1, len(acc)), np.float32))
    np.testing.assert_array_equal(h[0], np.round(acc * mults).astype(np.int64))


def test_compiled_logits_to_cdf_equals_the_reference(checkpoint):
  from neural_compression.m1.engine import compiled_forward as cf
  engine = ee.load_exact_model(checkpoint, backend="numpy").engine
  rng = np.random.default_rng(1)
  z = rng.integers(-3000, 3000, (64, 257)).astype(np.int64)
  z[0] = 0  # all ties: every symbol gets the same remainder
  z[1, 5] = 10 ** 6  # one near-certain symbol
  z[2] = np.arange(257) % 3  # three-way ties
  z[3] = -np.arange(257) * 40  # past the table's end
  z[4:20] = rng.integers(-8, 8, (16, 257))  # many equal remainders
  out = np.empty((len(z), 258), np.int64)
  # The kernel takes the logit GEMM's output and its multipliers: feed z itself (mult 1).
  cf.logits_to_cdf(z.astype(np.float32), np.ones(257, np.float32), engine.p["logit_exp"], out)
  np.testing.assert_array_equal(out, engine._logits_to_cdf(z))  # pylint: disable=protected-access


@pytest.mark.parametrize("batch", [1, 64, 512])
def test_compiled_model_cdfs_equal_numpy_at_any_batch(checkpoint, contexts, reference, batch,
                                                     gemm_path):
  model = ee.load_exact_model(checkpoint, backend="compiled")
  assert bool(model.engine._compiled.packed) == (gemm_path == "int8_gemm")  # pylint: disable=protected-access
  assert_batch_invariant(model, contexts, reference, batch)


def test_auto_backend_is_compiled_without_a_gpu(checkpoint, monkeypatch):
  from neural_compression.m1.engine import jax_backend
  monkeypatch.setattr(jax_backend, "gpu_visible", lambda: False)
  assert ee.load_exact_model(checkpoint).engine.backend.name == "compiled"
  with pytest.raises(ValueError, match="compiled"):
    ee.load_exact_model(checkpoint, backend="fast")


def test_shipped_m1_compiled_lockstep_equals_numpy_past_its_window():
  """AC's path with the shipped checkpoint over 700 positions (its window is 512, so the
  compiled buffer slides): every CDF identical to the numpy backend's."""
  from neural_compression import corpus
  shipped = pathlib.Path(__file__).resolve().parent.parent / "m1_checkpoint"
  text = next(corpus.default_corpus_documents("validation"))["text"].encode()
  rows = [np.frombuffer(text[s:s + 700], np.uint8) for s in (0, 5000, 9000)]
  sessions = [ee.load_exact_model(shipped, backend=b, max_cache_bytes=8 << 20).lockstep(len(rows))
              for b in ("numpy", "compiled")]
  tokens = None
  for i in range(700):
    want, got = (s.step(tokens) for s in sessions)
    np.testing.assert_array_equal(got, want, err_msg=f"position {i}")
    tokens = np.array([r[i] for r in rows], np.int64)


def _sources_sha256(paths) -> str:
  h = hashlib.sha256()
  for path in paths:
    h.update(path.encode() + b"\0" + (REPO_ROOT / path).read_bytes() + b"\0")
  return h.hexdigest()


def _kernel_global_names(module) -> set[str]:
  """Global names read by the module's own numba kernels (their code and nested code)."""
  names = set()
  for value in vars(module).values():
    if isinstance(value, Dispatcher) and value.py_func.__module__ == module.__name__:
      codes = [value.py_func.__code__]
      while codes:
        code = codes.pop()
        names.update(code.co_names)
        codes += [c for c in code.co_consts if isinstance(c, types.CodeType)]
  return names


def _kernel_modules() -> list[str]:
  """Every module of the package that compiles numba kernels (found by its source text)."""
  package = REPO_ROOT / "neural_compression"
  return sorted(".".join(f.relative_to(REPO_ROOT).with_suffix("").parts)
                for f in package.rglob("*.py") if "numba.njit(" in f.read_text())


def _defined_in(name: str, text: str) -> str | None:
  """The module-level assignment line of `name` in a module's text, or None."""
  found = re.search(rf"^{name}\s*(:[^=\n]*)?=.*$", text, re.M)
  return found.group(0) if found else None


@pytest.mark.parametrize("module_name", _kernel_modules())
def test_kernels_stamp_the_sources_they_compile_in(module_name):
  """numba's cache checks only a kernel's own file: a module whose kernels compile in other
  files' kernels or constants carries a stamp of those files, COMPILED_IN_SOURCES and
  COMPILED_IN_SHA256 (so that editing them invalidates its cache). The stamp must be current and
  name every other file its kernels read: modules, kernels and constants imported by name, and
  the modules the module's own constants are computed from."""
  module = importlib.import_module(module_name)
  sources = getattr(module, "COMPILED_IN_SOURCES", ())
  if sources:
    expected = _sources_sha256(sources)
    assert module.COMPILED_IN_SHA256 == expected, (
        f"{module_name}.COMPILED_IN_SHA256 is stale: set it to {expected!r} (else a numba cache "
        f"compiled before the edit keeps the old code of {sources})")
  package_files = list((REPO_ROOT / "neural_compression").rglob("*.py"))
  own_text = inspect.getsource(module)
  needed = set()

  def note(value):
    if inspect.ismodule(value) and value.__name__.startswith("neural_compression") and \
        value is not module:
      needed.add(value.__file__)
    elif isinstance(value, Dispatcher) and value.py_func.__module__ != module_name:
      needed.add(inspect.getfile(value.py_func))

  for name in _kernel_global_names(module):
    value = getattr(module, name, None)
    note(value)
    if inspect.ismodule(value) or callable(value):
      continue
    line = _defined_in(name, own_text)
    if line is None:  # a constant imported by name: the files that define it
      needed.update(str(f) for f in package_files if _defined_in(name, f.read_text()))
    else:  # a constant of this module: the modules it is computed from
      for alias in re.findall(r"\b(\w+)\.", line.split("=", 1)[1]):
        note(getattr(module, alias, None))
  listed = {str(REPO_ROOT / path) for path in sources}
  assert {str(pathlib.Path(p).resolve()) for p in needed} <= listed, (
      f"{module_name}'s kernels read {sorted(needed)}; its COMPILED_IN_SOURCES lists "
      f"{sorted(listed)}")
