"""The T5X gin configs in seqio_tasks/gin/ parse, name real tasks and build the right model.

T5X is not installable here, so the T5X symbols the configs name are stand-ins registered in
sys.modules with the parameter names of T5X's own signatures (t5x/models.py, utils.py,
adafactor.py, train.py, examples/decoder_only/network.py): a misspelled parameter fails to
parse. Our own configurables (seqio_tasks.*) and seqio's are the real ones.
"""
import dataclasses
import pathlib
import sys
import types
from typing import Any, Mapping, Optional

import gin
import pytest
import seqio

import seqio_tasks
from neural_compression import methods
from seqio_tasks import tasks
from seqio_tasks import vocabularies

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
GIN_DIR = REPO_ROOT / "seqio_tasks" / "gin"
SIZE_FILES = {"25m": (512, 8, 6, 2048), "113m": (768, 12, 12, 3072),
              "403m": (1024, 16, 24, 4096), "2b": (2048, 32, 24, 8192)}


# --- T5X stand-ins (signatures only; they record what gin passes) -----------------------------
@dataclasses.dataclass
class TransformerConfig:
  vocab_size: int
  dtype: Any = "float32"
  emb_dim: int = 512
  num_heads: int = 8
  num_layers: int = 6
  head_dim: int = 64
  mlp_dim: int = 2048
  mlp_activations: Any = ("relu",)
  dropout_rate: float = 0.1
  logits_via_embedding: bool = False


@dataclasses.dataclass
class DecoderWrapper:
  config: TransformerConfig


@dataclasses.dataclass
class DecoderOnlyModel:
  module: Any
  vocabulary: Any
  optimizer_def: Any
  decode_fn: Any = None
  inputs_bidirectional_attention: bool = False
  feature_converter_cls: Any = None
  label_smoothing: float = 0.0
  z_loss: float = 0.0
  loss_normalizing_factor: Optional[float] = None


def adafactor_stand_in(learning_rate=None, factored=True, multiply_by_parameter_scale=True,
                       beta1=None, decay_rate=0.8, step_offset=0, clipping_threshold=1.0,
                       weight_decay_rate=None, min_dim_size_to_factor=128, epsilon1=1e-30,
                       epsilon2=1e-3, dtype_momentum=None, factor_map=None,
                       logical_factor_rules=None, weight_decay_rate_lr_exponent=None,
                       global_norm_clip_threshold=None, max_parameter_scale=None,
                       skip_nan_updates=False):
  return dict(locals())


def temperature_sample(inputs=None, cache=None, tokens_to_logits=None, eos_id=None,
                       decode_rng=None, num_decodes=1, temperature=1.0, topk=1, topp=0.0,
                       initial_index=None, max_decode_steps=None):
  return None


@dataclasses.dataclass
class DatasetConfig:
  mixture_or_task_name: Any
  task_feature_lengths: Mapping[str, int]
  split: str
  batch_size: int
  shuffle: bool
  seed: Optional[int]
  use_cached: bool = False
  pack: bool = False
  use_custom_packing_ops: bool = False
  module: Optional[str] = None
  use_memory_cache: bool = True
  trim_output_features: bool = True


@dataclasses.dataclass
class CheckpointConfig:
  save: Any = None
  restore: Any = None


@dataclasses.dataclass
class RestoreCheckpointConfig:
  path: Any
  mode: str = "latest"
  dtype: str = "float32"
  restore_dataset: bool = False
  strict: bool = True
  fallback_to_scratch: bool = False


@dataclasses.dataclass
class SaveCheckpointConfig:
  dtype: str = "float32"
  period: Optional[int] = None
  checkpoint_steps: Any = None
  keep: Optional[int] = None
  keep_dataset_checkpoints: Optional[int] = None
  save_dataset: bool = False


def create_learning_rate_scheduler(factors="constant * linear_warmup * rsqrt_decay",
                                   base_learning_rate=0.5, warmup_steps=1000, decay_factor=0.5,
                                   steps_per_decay=20000, steps_per_cycle=100000,
                                   step_offset=0, min_learning_rate=1e-8):
  return dict(locals())


class Trainer:

  def __init__(self, model, train_state, partitioner, eval_names, summary_dir,
               train_state_axes, rng, learning_rate_fn, num_microbatches,
               weight_metrics_computer=None):
    pass


class PjitPartitioner:

  def __init__(self, num_partitions=None, model_parallel_submesh=None, params_on_devices=True,
               backend=None, logical_axis_rules=None, use_cpu_pjit=False):
    self.num_partitions = num_partitions


def standard_logical_axis_rules(activation_partitioning_dims=1,
                                parameter_partitioning_dims=1):
  return ()


def summarize_gin_config(model_dir, summary_writer, step):
  pass


def train(*, model, train_dataset_cfg, train_eval_dataset_cfg, infer_eval_dataset_cfg,
          checkpoint_cfg, partitioner, trainer_cls, model_dir, total_steps, eval_steps,
          eval_period, stats_period=None, random_seed, use_hardware_rng=False,
          summarize_config_fn, inference_evaluator_cls=None, get_dataset_fn=None,
          concurrent_metrics=True, actions=None, train_eval_get_dataset_fn=None,
          run_eval_before_training=False):
  return dict(locals())


def _module(name, **members):
  module = types.ModuleType(name)
  for key, value in members.items():
    setattr(module, key, value)
  return module


def standard_logical_factor_rules():
  return {}


# Built once: gin refuses a second, different object under an already registered name.
_NETWORK = _module("t5x.examples.decoder_only.network", TransformerConfig=TransformerConfig,
                   DecoderWrapper=DecoderWrapper)
_T5X_MODULES = {
    "t5x": _module("t5x"),
    "t5x.examples": _module("t5x.examples"),
    "t5x.examples.decoder_only": _module("t5x.examples.decoder_only", network=_NETWORK),
    "t5x.examples.decoder_only.network": _NETWORK,
    "t5x.models": _module("t5x.models", DecoderOnlyModel=DecoderOnlyModel),
    "t5x.adafactor": _module("t5x.adafactor", Adafactor=adafactor_stand_in,
                             standard_logical_factor_rules=standard_logical_factor_rules),
    "t5x.decoding": _module("t5x.decoding", temperature_sample=temperature_sample),
    "t5x.utils": _module("t5x.utils", DatasetConfig=DatasetConfig,
                         CheckpointConfig=CheckpointConfig,
                         RestoreCheckpointConfig=RestoreCheckpointConfig,
                         SaveCheckpointConfig=SaveCheckpointConfig,
                         create_learning_rate_scheduler=create_learning_rate_scheduler),
    "t5x.trainer": _module("t5x.trainer", Trainer=Trainer),
    "t5x.partitioning": _module("t5x.partitioning", PjitPartitioner=PjitPartitioner,
                                standard_logical_axis_rules=standard_logical_axis_rules),
    "t5x.gin_utils": _module("t5x.gin_utils", summarize_gin_config=summarize_gin_config),
}
for _name, _mod in _T5X_MODULES.items():
  if "." in _name:
    _parent, _child = _name.rsplit(".", 1)
    setattr(_T5X_MODULES[_parent], _child, _mod)


@pytest.fixture
def t5x_stand_ins(monkeypatch):
  for name, module in _T5X_MODULES.items():
    monkeypatch.setitem(sys.modules, name, module)
  # t5x/train.py runs as __main__ and the configs bind `__main__.train`, as T5X's own do.
  monkeypatch.setattr(sys.modules["__main__"], "train", train, raising=False)
  gin.clear_config()
  gin.add_config_file_search_path(str(REPO_ROOT))
  yield
  gin.clear_config()


def _parse(*files, bindings=()):
  gin.clear_config()
  gin.parse_config_files_and_bindings([str(f) for f in files],
                                      ["MODEL_DIR = '/tmp/m2'", *bindings])
  # As t5x/train.py does: call train through gin, which fills in every bound argument.
  return gin.get_configurable(sys.modules["__main__"].train)()


def test_every_registered_task_has_a_task_gin_file():
  names = {p.stem for p in (GIN_DIR / "tasks").glob("*.gin")}
  assert names == {methods.parse_method(m).slug for m in tasks.ALL_METHODS}
  assert set(methods.PAPER_METHODS) <= set(tasks.ALL_METHODS)


@pytest.mark.parametrize("task_file", sorted((GIN_DIR / "tasks").glob("*.gin")),
                         ids=lambda p: p.stem)
def test_task_files_name_existing_tasks_and_their_vocabularies(t5x_stand_ins, task_file):
  out = _parse(GIN_DIR / "models" / "m2_25m.gin", GIN_DIR / "runs" / "m2_pretrain.gin",
               task_file)
  name = gin.query_parameter("%MIXTURE_OR_TASK_NAME")
  assert name in seqio.TaskRegistry.names()
  task = seqio.get_mixture_or_task(name)
  model = out["model"]
  # T5X refuses to train when the model's and the task's vocabularies differ.
  assert model.vocabulary == task.output_features["targets"].vocabulary
  assert hash(model.vocabulary) == hash(task.output_features["targets"].vocabulary)
  assert out["train_dataset_cfg"].mixture_or_task_name == name
  assert out["train_dataset_cfg"].task_feature_lengths == {"targets": 512}
  assert gin.query_parameter("%TASK_FEATURE_LENGTHS") == {"targets": 512}


@pytest.mark.parametrize("size", sorted(SIZE_FILES))
def test_model_sizes_and_training_settings(t5x_stand_ins, size):
  out = _parse(GIN_DIR / "models" / f"m2_{size}.gin", GIN_DIR / "runs" / "m2_pretrain.gin",
               GIN_DIR / "tasks" / "static_equal_info_ac_b16_v65k.gin")
  config = out["model"].module.config
  assert (config.emb_dim, config.num_heads, config.num_layers, config.mlp_dim) == \
      SIZE_FILES[size]
  assert config.head_dim == 64 and config.num_heads * config.head_dim == config.emb_dim
  # v65k: 65,536 tokens + 3 reserved ids, padded to a multiple of 128.
  assert config.vocab_size == 65664 >= out["model"].vocabulary.vocab_size == 65539
  assert out["model"].z_loss == 1e-4
  assert out["model"].inputs_bidirectional_attention is False
  assert out["total_steps"] == 200_000
  train_cfg = out["train_dataset_cfg"]
  assert (train_cfg.batch_size, train_cfg.split, train_cfg.use_cached) == (256, "train", False)
  assert out["infer_eval_dataset_cfg"].split == "validation"
  assert issubclass(out["inference_evaluator_cls"], seqio.Evaluator)  # gin wraps classes
  schedule = gin.get_bindings("t5x.utils.create_learning_rate_scheduler")
  assert schedule == {"factors": "constant * rsqrt_decay", "base_learning_rate": 1.0,
                      "warmup_steps": 10_000}


def test_non_embedding_parameters_match_the_paper():
  # 16 * d_model**2 per layer: attention 4 d^2, gated MLP 3 * d * 4d (models/m2_base.gin).
  paper = {"25m": 25e6, "113m": 113e6, "403m": 403e6}
  for size, millions in paper.items():
    d, _, layers, mlp = SIZE_FILES[size]
    assert mlp == 4 * d
    assert layers * (4 * d * d + 3 * d * mlp) == pytest.approx(millions, rel=0.01)


def test_gin_can_point_the_tasks_at_a_data_dir(t5x_stand_ins, monkeypatch):
  monkeypatch.delenv(seqio_tasks.data.DATA_DIR_ENV, raising=False)
  _parse(GIN_DIR / "models" / "m2_25m.gin", GIN_DIR / "runs" / "m2_pretrain.gin",
         GIN_DIR / "tasks" / "bytes.gin",
         bindings=["seqio_tasks.set_data_dir.data_dir = '/data/run7'"])
  assert seqio_tasks.get_data_dir() == "/data/run7"
  gin.clear_config()
  assert seqio_tasks.get_data_dir() == seqio_tasks.data.DEFAULT_DATA_DIR


def test_vocabulary_for_is_the_task_vocabulary():
  for method in ("static_ac:v256", "gzip:v65k", "bytes", "spm:v32k", "equal_info_ac:b16:v65k"):
    vocab = seqio_tasks.vocabulary_for(method)
    task = seqio.get_mixture_or_task(seqio_tasks.task_name(method))
    assert vocab is task.output_features["targets"].vocabulary
    assert isinstance(vocab, vocabularies.CompressedTextVocabulary)
