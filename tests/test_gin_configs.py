"""The T5X gin configs in seqio_tasks/gin/ parse with real T5X, name real tasks, build the model.

Parsed in-process against the installed T5X (`make test` installs it): a misspelled parameter or
symbol fails to parse, and the objects gin would pass (T5X's DecoderOnlyModel, TransformerConfig,
DatasetConfig, ...) are built for real. The run configs bind `__main__.train`, `evaluate` and
`infer`, since t5x/train.py, eval.py and infer.py run as __main__; the fixture puts T5X's own
functions there, and `gin.get_bindings` evaluates what gin would pass them without calling them
(tests/test_t5x.py runs the scripts).
"""
import os
import pathlib
import sys

import gin
import jax
import numpy as np
import pytest
import seqio
import t5x.eval
import t5x.infer
import t5x.train
from t5x import models
from t5x import utils

import seqio_tasks
from neural_compression import methods
from seqio_tasks import tasks
from seqio_tasks import vocabularies

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
GIN_DIR = REPO_ROOT / "seqio_tasks" / "gin"
SIZE_FILES = {"25m": (512, 8, 6, 2048), "113m": (768, 12, 12, 3072),
              "403m": (1024, 16, 24, 4096), "2b": (2048, 32, 24, 8192)}
RUN_SCRIPTS = {"m2_pretrain": t5x.train.train, "m2_eval": t5x.eval.evaluate,
               "m2_score": t5x.infer.infer, "m2_sample": t5x.infer.infer}


@pytest.fixture
def t5x_main(monkeypatch):
  """T5X's script functions as `__main__.*`, where the configs (and T5X's own) bind them."""
  main = sys.modules["__main__"]
  for name, fn in [("train", t5x.train.train), ("evaluate", t5x.eval.evaluate),
                   ("infer", t5x.infer.infer),
                   ("write_inferences_to_file", t5x.infer.write_inferences_to_file)]:
    monkeypatch.setattr(main, name, fn, raising=False)
  gin.clear_config()
  yield
  gin.clear_config()


def _parse(size: str, run: str, task: str, bindings=()) -> dict:
  """Parses models/m2_<size>, runs/<run>, tasks/<task> (as T5X's scripts would, files then
  bindings) and returns the arguments gin passes to the run's script function."""
  required = {"m2_pretrain": ["MODEL_DIR = '/tmp/m2'"],
              "m2_eval": ["CHECKPOINT_PATH = '/tmp/m2/checkpoint_9'",
                          "EVAL_OUTPUT_DIR = '/tmp/m2/eval'"],
              "m2_score": ["CHECKPOINT_PATH = '/tmp/m2/checkpoint_9'",
                           "INFER_OUTPUT_DIR = '/tmp/m2/score'"],
              "m2_sample": ["CHECKPOINT_PATH = '/tmp/m2/checkpoint_9'",
                            "INFER_OUTPUT_DIR = '/tmp/m2/samples'"]}[run]
  gin.clear_config()
  gin.parse_config_files_and_bindings(
      [f"seqio_tasks/gin/models/m2_{size}.gin", f"seqio_tasks/gin/runs/{run}.gin",
       f"seqio_tasks/gin/tasks/{task}.gin"], [*required, *bindings])
  return gin.get_bindings(RUN_SCRIPTS[run])


def test_every_registered_task_has_a_task_gin_file():
  names = {p.stem for p in (GIN_DIR / "tasks").glob("*.gin")}
  assert names == {methods.parse_method(m).slug for m in tasks.ALL_METHODS}
  assert set(methods.PAPER_METHODS) <= set(tasks.ALL_METHODS)


@pytest.mark.parametrize("task_file", sorted((GIN_DIR / "tasks").glob("*.gin")),
                         ids=lambda p: p.stem)
def test_task_files_name_existing_tasks_and_their_vocabularies(t5x_main, task_file):
  out = _parse("25m", "m2_pretrain", task_file.stem)
  name = gin.query_parameter("%MIXTURE_OR_TASK_NAME")
  assert name in seqio.TaskRegistry.names()
  task = seqio.get_mixture_or_task(name)
  model = out["model"]
  assert isinstance(model, models.DecoderOnlyModel)
  # T5X refuses to train when the model's and the task's vocabularies differ.
  assert model.output_vocabulary == task.output_features["targets"].vocabulary
  assert hash(model.output_vocabulary) == hash(task.output_features["targets"].vocabulary)
  assert isinstance(out["train_dataset_cfg"], utils.DatasetConfig)
  assert out["train_dataset_cfg"].mixture_or_task_name == name
  assert out["train_dataset_cfg"].task_feature_lengths == {"targets": 512}


@pytest.mark.parametrize("size", sorted(SIZE_FILES))
def test_model_sizes_and_training_settings(t5x_main, size):
  out = _parse(size, "m2_pretrain", "static_equal_info_ac_b16_v65k")
  config = out["model"].module.config
  assert (config.emb_dim, config.num_heads, config.num_layers, config.mlp_dim) == \
      SIZE_FILES[size]
  assert config.head_dim == 64 and config.num_heads * config.head_dim == config.emb_dim
  assert config.mlp_activations == ("gelu", "linear") and config.dropout_rate == 0.0
  # v65k: 65,536 tokens + 3 reserved ids, padded to a multiple of 128.
  assert config.vocab_size == 65664 >= out["model"].output_vocabulary.vocab_size == 65539
  assert gin.query_parameter("%Z_LOSS") == 1e-4
  assert gin.query_parameter("%LOSS_NORMALIZING_FACTOR") is None
  assert out["total_steps"] == 200_000
  assert (out["eval_period"], out["eval_steps"]) == (10_000, 20)
  train_cfg = out["train_dataset_cfg"]
  assert (train_cfg.batch_size, train_cfg.split, train_cfg.use_cached, train_cfg.pack) == \
      (256, "train", False, False)
  assert out["infer_eval_dataset_cfg"].split == "validation"
  assert out["checkpoint_cfg"].save.period == 10_000
  assert issubclass(out["inference_evaluator_cls"], seqio.Evaluator)  # gin wraps classes
  schedule = gin.get_bindings("t5x.utils.create_learning_rate_scheduler")
  assert schedule == {"factors": "constant * rsqrt_decay", "base_learning_rate": 1.0,
                      "warmup_steps": 10_000}


def test_eval_and_score_configs_read_the_validation_split(t5x_main):
  # T5X's stock runs/eval.gin and infer.gin read split 'test', which our tasks lack.
  evaluate = _parse("25m", "m2_eval", "equal_info_ac_b16_v65k")
  assert evaluate["dataset_cfg"].split == "validation"
  assert evaluate["dataset_cfg"].mixture_or_task_name == "c4_equal_info_ac_b16_v65k"
  assert evaluate["dataset_cfg"].task_feature_lengths == {"targets": 512}
  assert not evaluate["dataset_cfg"].pack
  assert (evaluate["restore_checkpoint_cfg"].path, evaluate["restore_checkpoint_cfg"].mode) == \
      ("/tmp/m2/checkpoint_9", "specific")
  assert evaluate["output_dir"] == "/tmp/m2/eval"
  score = _parse("25m", "m2_score", "bytes")
  assert (score["mode"], score["dataset_cfg"].split) == ("score", "validation")
  written = gin.get_bindings(t5x.infer.write_inferences_to_file)
  assert written["input_fields_to_include"] == ["example_id", "chunk", "raw_bytes"]


def test_sample_config_prompts_with_the_tasks_prompted_twin(t5x_main):
  sample = _parse("25m", "m2_sample", "equal_info_ac_b16_v65k")
  assert sample["mode"] == "predict"
  cfg = sample["dataset_cfg"]
  assert cfg.mixture_or_task_name == "c4_equal_info_ac_b16_v65k_prompt"
  assert cfg.mixture_or_task_name in seqio.TaskRegistry.names()
  assert cfg.task_feature_lengths == {"inputs": 64, "targets": 448}
  assert cfg.split == "validation"
  prompted = seqio.get_mixture_or_task(cfg.mixture_or_task_name)
  vocab = sample["model"].output_vocabulary
  assert prompted.output_features["inputs"].vocabulary == vocab
  assert prompted.output_features["targets"].vocabulary == vocab
  written = gin.get_bindings(t5x.infer.write_inferences_to_file)
  assert written["output_ids"] is True
  assert written["input_fields_to_include"] == ["example_id", "chunk", "inputs"]


def test_relative_gin_files_resolve_as_package_resources_from_any_directory(
    t5x_main, tmp_path, monkeypatch):
  # gin tries a relative --gin_file (and each `include`) as a file of an importable package
  # before any search path; a directory there without __init__.py crashed that lookup.
  for directory in [GIN_DIR, *(p for p in GIN_DIR.iterdir() if p.is_dir() and
                                p.name != "__pycache__")]:
    assert (directory / "__init__.py").is_file(), directory
  monkeypatch.chdir(tmp_path)
  assert not os.path.exists("seqio_tasks")
  out = _parse("403m", "m2_pretrain", "bytes")  # includes models/m2_base.gin
  assert out["model"].module.config.emb_dim == 1024
  assert gin.query_parameter("%MIXTURE_OR_TASK_NAME") == "c4_bytes"


def test_gin_can_point_the_tasks_at_a_data_dir(t5x_main, monkeypatch):
  monkeypatch.delenv(seqio_tasks.data.DATA_DIR_ENV, raising=False)
  _parse("25m", "m2_pretrain", "bytes",
         bindings=["seqio_tasks.set_data_dir.data_dir = '/data/run7'"])
  assert seqio_tasks.get_data_dir() == "/data/run7"
  gin.clear_config()
  assert seqio_tasks.get_data_dir() == seqio_tasks.data.DEFAULT_DATA_DIR


def test_non_embedding_parameters_match_the_paper():
  # 16 * d_model**2 per layer: attention 4 d^2, gated MLP 3 * d * 4d (models/m2_base.gin).
  paper = {"25m": 25e6, "113m": 113e6, "403m": 403e6}
  for size, millions in paper.items():
    d, _, layers, mlp = SIZE_FILES[size]
    assert mlp == 4 * d
    assert layers * (4 * d * d + 3 * d * mlp) == pytest.approx(millions, rel=0.01)


def test_the_training_loss_is_the_batch_sum_of_token_losses(t5x_main):
  """LOSS_NORMALIZING_FACTOR = None (m2_base.gin): T5X sums, it does not average."""
  out = _parse("25m", "m2_pretrain", "bytes", bindings=[
      "network.TransformerConfig.emb_dim = 32", "network.TransformerConfig.num_heads = 2",
      "network.TransformerConfig.num_layers = 1", "network.TransformerConfig.head_dim = 16",
      "network.TransformerConfig.mlp_dim = 64", "network.TransformerConfig.dtype = 'float32'",
      "Z_LOSS = 0.0"])
  model = out["model"]
  # Two rows of 16 tokens, the second half padding: 24 target tokens.
  targets = np.zeros((2, 16), np.int32)
  targets[0] = np.arange(16) + vocabularies.ID_OFFSET
  targets[1, :8] = np.arange(8) * 7 + vocabularies.ID_OFFSET
  inputs = np.concatenate([np.zeros((2, 1), np.int32), targets[:, :-1]], axis=1)
  batch = {"decoder_target_tokens": targets, "decoder_input_tokens": inputs,
           "decoder_loss_weights": (targets > 0).astype(np.float32),
           "decoder_segment_ids": (targets > 0).astype(np.int32),
           "decoder_positions": np.tile(np.arange(16, dtype=np.int32), (2, 1))}
  params = model.get_initial_variables(
      jax.random.PRNGKey(0), {k: v.shape for k, v in batch.items()},
      {k: v.dtype for k, v in batch.items()})["params"]
  loss, _ = model.loss_fn(params, batch, dropout_rng=None)
  token_log_likelihoods = np.asarray(model.score_batch(params, batch))  # per row, nats
  assert float(loss) == pytest.approx(-token_log_likelihoods.sum(), rel=1e-5)
  # A mean over the 24 tokens would be ~ln(384) = 5.95 nats; the sum is 24 times that.
  assert float(loss) > 20 * np.log(model.module.config.vocab_size)


def test_vocabulary_for_is_the_task_vocabulary():
  for method in ("static_ac:v256", "gzip:v65k", "bytes", "spm:v32k", "equal_info_ac:b16:v65k"):
    vocab = seqio_tasks.vocabulary_for(method)
    task = seqio.get_mixture_or_task(seqio_tasks.task_name(method))
    assert vocab is task.output_features["targets"].vocabulary
    assert isinstance(vocab, vocabularies.CompressedTextVocabulary)
