"""numpy M1 inference matches the Flax model and needs no JAX."""
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from neural_compression import symbols as sym
from neural_compression.m1 import config as m1_config
from neural_compression.transformer import model as m1_model
from neural_compression.transformer import numpy_inference as ni
from tests.test_transformer_model import random_params

CONFIG = m1_config.M1Config(num_layers=2, d_model=48, num_heads=3, head_dim=16, mlp_dim=96,
                            num_buckets=8, max_distance=16)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  params = random_params(CONFIG, seed=5)
  directory = tmp_path_factory.mktemp("m1")
  ni.save_checkpoint(directory, CONFIG, m1_model.flatten_params(params))
  return params, ni.load_model(directory)


def test_numpy_logits_match_flax(models):
  params, np_model = models
  rng = np.random.default_rng(0)
  x = rng.integers(0, sym.M1_VOCAB_SIZE, size=(3, 45)).astype(np.int32)  # > max_distance
  x[:, 0] = ni.BOS
  flax_logits = np.asarray(m1_model.logits_fn(CONFIG)(params, x))
  np.testing.assert_allclose(np_model.logits(x), flax_logits, atol=1e-4, rtol=0)


def test_next_symbol_log_probs_of_ragged_prefixes(models):
  _, np_model = models
  rng = np.random.default_rng(1)
  prefixes = [rng.integers(0, sym.NUM_SYMBOLS, size=n) for n in (0, 1, 13, 30)]
  batched = np_model.next_symbol_log_probs(prefixes)
  assert batched.shape == (4, sym.NUM_SYMBOLS)
  np.testing.assert_allclose(np.exp(batched.astype(np.float64)).sum(-1), 1.0, atol=1e-5)
  for i, p in enumerate(prefixes):  # padding to a common length changes nothing
    np.testing.assert_allclose(batched[i], np_model.next_symbol_log_probs([p])[0], atol=1e-5)


def test_sequence_bits_agree_with_next_symbol_log_probs(models):
  _, np_model = models
  s = np.frombuffer(b"Mr. Speaker", np.uint8).astype(np.int64)
  bits = np_model.sequence_bits(s)
  expected = [-np_model.next_symbol_log_probs([s[:i]])[0, s[i]] / np.log(2) for i in range(len(s))]
  np.testing.assert_allclose(bits, expected, atol=1e-4)


def test_module_imports_without_jax():
  code = ("import sys; sys.modules['jax'] = None; sys.modules['flax'] = None; "
          "from neural_compression.m1 import numpy_inference; print('ok')")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "ok"


def test_wrong_shapes_are_rejected(models):
  params, _ = models
  flat = m1_model.flatten_params(params)
  flat["output/kernel"] = flat["output/kernel"][:, :-1]
  with pytest.raises(ni.CheckpointError, match="output/kernel"):
    ni.NumpyM1(CONFIG, flat)


def test_the_training_context_is_read_from_the_checkpoint(tmp_path):
  """The shipped M1 trained on 512-symbol windows (its command says so; older checkpoints have
  no context_length field); new checkpoints record the length they trained at."""
  shipped = pathlib.Path(__file__).resolve().parent.parent / "m1_checkpoint"
  assert ni.training_context_length(shipped) == 512
  config = m1_config.SIZES["tiny"]
  params = {n: np.zeros(s, np.float32) for n, s in ni.param_shapes(config).items()}
  ni.save_checkpoint(tmp_path / "new", config, params, context_length=96)
  assert ni.training_context_length(tmp_path / "new") == 96
  ni.save_checkpoint(tmp_path / "unknown", config, params, metadata={"command": "`train`"})
  assert ni.training_context_length(tmp_path / "unknown") is None
