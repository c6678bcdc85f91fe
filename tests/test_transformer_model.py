"""M1 Flax model: causality, segment isolation, config, checkpoint round trip."""
import json

import jax
import numpy as np
import pytest

from neural_compression import symbols as sym
from neural_compression.m1 import config as m1_config
from neural_compression.transformer import model as m1_model
from neural_compression.transformer import numpy_inference as ni

TINY = m1_config.SIZES["tiny"]


def random_params(config, seed=0):
  """Initialized params with every leaf perturbed, so zero-initialized biases matter too."""
  params = m1_model.init_params(config, seed)
  leaves, treedef = jax.tree_util.tree_flatten(params)
  rng = np.random.default_rng(seed)
  leaves = [np.asarray(l) + 0.3 * rng.standard_normal(l.shape).astype(np.float32) for l in leaves]
  return jax.tree_util.tree_unflatten(treedef, leaves)


@pytest.fixture(scope="module")
def setup():
  return random_params(TINY), m1_model.logits_fn(TINY)


def test_logits_shape_and_dtype(setup):
  params, fn = setup
  out = fn(params, np.zeros((3, 11), np.int32))
  assert out.shape == (3, 11, sym.M1_VOCAB_SIZE) and out.dtype == np.float32


def test_changing_a_later_symbol_never_changes_an_earlier_prediction(setup):
  params, fn = setup
  rng = np.random.default_rng(1)
  x = rng.integers(0, sym.NUM_SYMBOLS, size=(1, 40)).astype(np.int32)
  x[0, 0] = ni.BOS
  base = np.asarray(fn(params, x))
  for i in (1, 17, 39):
    y = x.copy()
    y[0, i] = (y[0, i] + 1 + rng.integers(0, 200)) % sym.NUM_SYMBOLS
    out = np.asarray(fn(params, y))
    np.testing.assert_array_equal(out[0, :i], base[0, :i])
    assert not np.allclose(out[0, i], base[0, i])  # the change is visible from position i on


def test_segments_are_modelled_independently(setup):
  params, fn = setup
  rng = np.random.default_rng(2)
  a = rng.integers(0, 256, size=9).astype(np.int32)
  b = rng.integers(0, 256, size=7).astype(np.int32)
  packed = np.concatenate([[ni.BOS], a, [ni.BOS], b])[None].astype(np.int32)
  segments = np.array([[0] * 10 + [1] * 8], np.int32)
  out = np.asarray(fn(params, packed, segments))
  alone = np.asarray(fn(params, np.concatenate([[ni.BOS], b])[None].astype(np.int32)))
  np.testing.assert_allclose(out[0, 10:], alone[0], atol=1e-5)


def test_relative_position_buckets():
  b = ni.relative_position_buckets(300, 300, 32, 128)
  row = b[-1, ::-1]  # bucket by distance 0..299 for the last query
  np.testing.assert_array_equal(row[:16], np.arange(16))
  assert np.all(np.diff(row) >= 0) and row[100] < 31 and np.all(row[128:] == 31)
  # Queries aligned at the end of the keys give the last rows of the square matrix.
  np.testing.assert_array_equal(ni.relative_position_buckets(5, 300, 32, 128), b[-5:])


def test_config_sizes_and_json_round_trip():
  c = m1_config.config_for_size("3m")
  assert (c.num_layers, c.d_model, c.num_heads, c.head_dim, c.mlp_dim) == (3, 256, 4, 64, 1024)
  assert c == m1_config.M1Config()  # the paper's 3m is the default
  assert 2.3e6 < c.non_embedding_params() < 2.5e6
  assert (m1_config.SIZES["403m"].num_layers, m1_config.SIZES["403m"].d_model) == (24, 1024)
  for size in m1_config.SIZES.values():
    assert m1_config.M1Config.from_json(size.to_json()) == size
  with pytest.raises(ValueError):
    m1_config.M1Config.from_dict({**c.to_dict(), "bogus": 1})
  with pytest.raises(ValueError):
    m1_config.config_for_size("7m")
  with pytest.raises(ValueError):
    m1_config.M1Config(dropout_rate=0.1)


def test_checkpoint_save_load_gives_identical_logits(setup, tmp_path):
  params, fn = setup
  digest = ni.save_checkpoint(tmp_path / "ck", TINY, m1_model.flatten_params(params), {"k": 1})
  config, flat, meta = ni.load_checkpoint(tmp_path / "ck")
  assert config == TINY and meta == {"k": 1}
  assert json.loads((tmp_path / "ck" / "config.json").read_text())["weights_sha256"] == digest
  x = np.random.default_rng(3).integers(0, sym.M1_VOCAB_SIZE, size=(2, 23)).astype(np.int32)
  np.testing.assert_array_equal(np.asarray(fn(m1_model.unflatten_params(flat), x)),
                                np.asarray(fn(params, x)))
  # Saving the same weights again reproduces the same bytes.
  assert ni.save_checkpoint(tmp_path / "ck2", TINY, flat) == digest


def test_corrupt_checkpoint_is_rejected(setup, tmp_path):
  params, _ = setup
  ni.save_checkpoint(tmp_path, TINY, m1_model.flatten_params(params))
  data = bytearray((tmp_path / "weights.npz").read_bytes())
  data[-100] ^= 1
  (tmp_path / "weights.npz").write_bytes(bytes(data))
  with pytest.raises(ni.CheckpointError, match="sha256"):
    ni.load_checkpoint(tmp_path)
  with pytest.raises(ni.CheckpointError, match="missing"):
    ni.load_checkpoint(tmp_path / "nowhere")


def test_host_init_matches_the_flax_modules():
  host = m1_model.init_params(TINY, 0)
  flax_init = m1_model.DecoderTransformer(TINY).init(jax.random.PRNGKey(0),
                                                     np.zeros((1, 4), np.int32))
  flax_init = flax_init["params"]
  assert jax.tree_util.tree_structure(host) == jax.tree_util.tree_structure(flax_init)
  for a, b in zip(jax.tree_util.tree_leaves(host), jax.tree_util.tree_leaves(flax_init)):
    assert a.shape == b.shape
  # The relative-position bias starts recency-biased (deterministic), in both.
  bias = np.asarray(host["layers_0"]["attention"]["rel_bias"])
  np.testing.assert_array_equal(bias, np.asarray(flax_init["layers_0"]["attention"]["rel_bias"]))
  assert bias[0, 0] == 0 and np.all(np.diff(bias, axis=0) < 0)
  # Same seed, same weights; another seed, other weights.
  wi = m1_model.flatten_params(host)["layers_1/mlp/wi"]
  np.testing.assert_array_equal(m1_model.flatten_params(m1_model.init_params(TINY, 0))[
      "layers_1/mlp/wi"], wi)
  assert not np.array_equal(m1_model.flatten_params(m1_model.init_params(TINY, 1))[
      "layers_1/mlp/wi"], wi)
