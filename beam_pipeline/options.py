"""The job's flags, as a Beam PipelineOptions subclass, and runner configs loaded by one flag."""
from __future__ import annotations

import os
import pathlib
import re

import yaml
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipeline import sources
from neural_compression import corpus
from neural_compression import examples as ex
from neural_compression import m2_examples

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
RUNNER_CONFIG_DIR = REPO_ROOT / "runner_configs"
DEFAULT_M1_CHECKPOINT = str(REPO_ROOT / "m1_checkpoint")

# EqualInfoAC[b=16, v=65k] (the paper's best) and the baselines.
DEFAULT_METHODS = "equal_info_ac:b16:v65k,static_ac:v256,gzip:v256,bytes,spm:v32k"
# The quick default run keeps this many examples per run; --full_corpus keeps all.
DEFAULT_EXAMPLES_PER_RUN = 12


class CompressionOptions(PipelineOptions):
  """Flags of `python -m beam_pipeline` (Beam's own flags, e.g. --runner, work as usual)."""

  @classmethod
  def _add_argparse_args(cls, parser):
    add = parser.add_argument
    add("--source", default="default", choices=sources.SOURCES,
        help="document source: the embedded default corpus, C4 JSON shards, TFDS c4/en:3.1.0, "
             "JSON lines or plain text")
    add("--input", default=None,
        help="file pattern (any Beam filesystem) for c4_json/jsonl/text; the data_dir for tfds")
    add("--validation_input", default=None,
        help="a second pattern read as the validation split (e.g. C4's c4-validation.*.json.gz); "
             "then --input is all train. Without it the split is by URL hash")
    add("--validation_percent", type=int, default=corpus.VALIDATION_PERCENT,
        help="documents (by URL hash) in the validation split, in percent")
    add("--output_dir", default="./output", help="where records, stats and manifest go")
    add("--overwrite", action="store_true",
        help="replace an existing run in --output_dir made with different flags")
    add("--methods", default=DEFAULT_METHODS,
        help="comma-separated methods, e.g. equal_info_ac:b16:v65k,ac:v256,static_ac:v256,"
             "gzip:v256,bytes,spm:v32k (see neural_compression/methods.py)")
    add("--docs_per_run", type=int, default=ex.DOCS_PER_RUN, help="documents per run")
    add("--example_bytes", type=int, default=ex.EXAMPLE_SYMBOLS,
        help="bytes (symbols, EOS included) per compressed example")
    add("--examples_per_run", type=int, default=DEFAULT_EXAMPLES_PER_RUN,
        help="keep the first K examples of each run (0: all); the default is a quick subset")
    add("--full_corpus", action="store_true", help="process every example (examples_per_run=0)")
    add("--run_buckets", type=int, default=1,
        help="groups that runs are formed in; use ~num_docs/20000 at scale (C4 en: 16384)")
    add("--m2_length", type=int, default=512, help="tokens per M2 example")
    add("--m2_mode", default="trim", choices=m2_examples.MODES,
        help="trim: first m2_length tokens of each example (paper); split: keep every token")
    add("--num_shards", type=int, default=4, help="TFRecord shards per method and split")
    add("--batch_size", type=int, default=256,
        help="examples per compression batch: one M1 engine row each (more rows, more speed)")
    add("--m1_checkpoint", default=DEFAULT_M1_CHECKPOINT,
        help="M1 checkpoint directory (inside the worker image or on a Beam filesystem)")
    add("--static_unigram", default=None,
        help="StaticAC model artifact (JSON); default: estimated on the train split")
    add("--spm_model", default=None,
        help="SentencePiece .model file; default: trained on the train split")
    add("--spm_train_docs_permille", type=int, default=1000,
        help="share of train documents (by URL hash, per mille) SentencePiece trains on")
    add("--artifact_cache_dir", default=None,
        help="where estimated artifacts are cached (default <output_dir>/artifacts)")
    add("--runner_config", default=None,
        help="a runner config name in runner_configs/ (direct, dataflow_gpu, flink, spark) or "
             "a YAML path; its flags come first, command-line flags override them")
    add("--fail_once_for_testing", default=None,
        help="TEST ONLY: path of a marker file; the first compression bundle fails once")


def runner_config_path(name_or_path: str) -> pathlib.Path:
  """Resolves --runner_config to a YAML file; raises FileNotFoundError naming the choices."""
  path = pathlib.Path(name_or_path)
  if path.suffix in (".yaml", ".yml") and path.is_file():
    return path
  candidate = RUNNER_CONFIG_DIR / f"{name_or_path}.yaml"
  if candidate.is_file():
    return candidate
  names = sorted(p.stem for p in RUNNER_CONFIG_DIR.glob("*.yaml"))
  raise FileNotFoundError(f"--runner_config={name_or_path!r}: no such file; "
                          f"known configs: {', '.join(names)}")


# $VAR or ${VAR}, as os.path.expandvars reads them (it leaves unset ones as they are).
_ENV_VAR = re.compile(r"\$(\w+)|\$\{([^}]*)\}")


def runner_config_args(name_or_path: str) -> list[str]:
  """The flags of a runner config YAML (a mapping flag -> value; lists repeat the flag).

  ${VAR} in a value is replaced by the environment variable; an unset one is a ValueError that
  names it, so that a job never reaches a cluster with a literal '${PROJECT}' in its options.
  """
  path = runner_config_path(name_or_path)
  config = yaml.safe_load(path.read_text()) or {}
  if not isinstance(config, dict):
    raise ValueError(f"{path}: a runner config is a mapping of flag names to values")
  args, unset = [], set()
  for key, value in config.items():
    for item in value if isinstance(value, list) else [value]:
      if item is True:
        args.append(f"--{key}")
      elif item is not False and item is not None:
        text = str(item)
        unset.update(a or b for a, b in _ENV_VAR.findall(text)
                     if (a or b) not in os.environ)
        args.append(f"--{key}={os.path.expandvars(text)}")
  if unset:
    raise ValueError(f"--runner_config={name_or_path}: set the environment variable(s) "
                     f"{', '.join(sorted(unset))} first (used in {path})")
  return args


def expand_runner_config(argv: list[str]) -> list[str]:
  """Puts a --runner_config's flags before argv (so explicit flags win)."""
  for i, arg in enumerate(argv):
    if arg.startswith("--runner_config="):
      return runner_config_args(arg.split("=", 1)[1]) + argv
    if arg == "--runner_config" and i + 1 < len(argv):
      return runner_config_args(argv[i + 1]) + argv
  return argv
