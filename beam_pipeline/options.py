"""The job's flags, as a Beam PipelineOptions subclass, and runner configs loaded by one flag."""
from __future__ import annotations

import argparse
import difflib
import os
import pathlib
import re

import yaml
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipeline import grouping
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
# SentencePiece's training sample (bytes of text): ~90k C4 documents, all of the default corpus.
DEFAULT_SPM_TRAIN_BYTES = 200_000_000


class ConfigError(ValueError):
  """A configuration that cannot work; raised before the job touches anything. Says what to do."""


class CompressionOptions(PipelineOptions):
  """Flags of `python -m beam_pipeline` (Beam's own flags, e.g. --runner, work as usual)."""

  @classmethod
  def _add_argparse_args(cls, parser):
    group = parser.add_argument_group("input")
    add = group.add_argument
    add("--source", default="default", choices=sources.SOURCES,
        help="document source: the embedded default corpus, C4 JSON shards, TFDS c4/en:3.1.0, "
             "JSON lines or plain text (default: %(default)s)")
    add("--input", default=None,
        help="file pattern (any Beam filesystem) for c4_json/jsonl/text; the data_dir for tfds")
    add("--validation_input", default=None,
        help="a second pattern read as the validation split (e.g. C4's c4-validation.*.json.gz; "
             "for tfds: the data_dir whose 'validation' split is read); then --input is all "
             "train. Without it the split is by URL hash")
    add("--validation_percent", type=int, default=corpus.VALIDATION_PERCENT,
        help="documents (by URL hash) in the validation split, in percent (default: %(default)s)")
    add("--text_field", default="text",
        help="--source=jsonl: the JSON field holding the text (default: %(default)s)")
    add("--text_lines", action="store_true",
        help="--source=text: one document per non-empty line instead of one per file")
    add("--invalid_utf8", default="dead_letter", choices=sources.INVALID_UTF8_POLICIES,
        help="--source=text: a document that is not valid UTF-8 is dead-lettered (lossless) or "
             "decoded with U+FFFD replacement (default: %(default)s)")

    group = parser.add_argument_group("methods and examples")
    add = group.add_argument
    add("--methods", default=DEFAULT_METHODS,
        help="comma-separated methods, e.g. equal_info_ac:b16:v65k,ac:v256,static_ac:v256,"
             "gzip:v256,bytes,spm:v32k (see README Methods; default: %(default)s)")
    add("--docs_per_run", type=int, default=ex.DOCS_PER_RUN,
        help="documents per run (default: %(default)s)")
    add("--example_bytes", type=int, default=ex.EXAMPLE_SYMBOLS,
        help="bytes (symbols, EOS included) per compressed example (default: %(default)s)")
    add("--examples_per_run", type=int, default=DEFAULT_EXAMPLES_PER_RUN,
        help="keep the first K examples of each run (0: all); the default is a quick subset "
             "(default: %(default)s)")
    add("--full_corpus", action="store_true", help="process every example (examples_per_run=0)")
    add("--run_buckets", type=int, default=1,
        help="groups that runs are formed in; use ~num_docs/20000 at scale (C4 en: 16384; "
             "default: %(default)s)")
    add("--m2_length", type=int, default=512, help="tokens per M2 example (default: %(default)s)")
    add("--m2_mode", default="trim", choices=m2_examples.MODES,
        help="trim: first m2_length tokens of each example (paper); split: keep every token "
             "(default: %(default)s)")
    add("--batch_size", type=int, default=256,
        help="examples per compression batch: one M1 engine row each (more rows, more speed; "
             "default: %(default)s)")

    group = parser.add_argument_group("models and artifacts")
    add = group.add_argument
    add("--m1_checkpoint", default=DEFAULT_M1_CHECKPOINT,
        help="M1 checkpoint directory (inside the worker image or on a Beam filesystem; "
             "default: the shipped m1_checkpoint/)")
    add("--m1_cache_bytes", type=int, default=None,
        help="byte budget of each worker's M1 prefix cache; least recently used prefixes are "
             "evicted beyond it, outputs do not change (default: 512 MiB)")
    add("--static_unigram", default=None,
        help="StaticAC model artifact (JSON); default: estimated on the train split")
    add("--spm_model", default=None,
        help="SentencePiece .model file; default: trained on the train split")
    add("--spm_train_bytes", type=int, default=DEFAULT_SPM_TRAIN_BYTES,
        help="bytes of train text SentencePiece trains on: the documents of smallest hash "
             "that fit, the same on any runner (default: %(default)s, enough for C4)")
    add("--artifact_cache_dir", default=None,
        help="where estimated artifacts are cached, keyed by the content they were estimated "
             "from (default: <output_dir>/artifacts)")

    group = parser.add_argument_group("output")
    add = group.add_argument
    add("--output_dir", default="./output",
        help="where records, stats and manifest go: an empty or new directory, or one holding "
             "a run of this job (default: %(default)s)")
    add("--overwrite", action="store_true",
        help="replace an existing run in --output_dir made with different flags")
    add("--num_shards", type=int, default=4,
        help="TFRecord shards per method and split (default: %(default)s)")
    add("--shuffle", default="auto", choices=grouping.SHUFFLES,
        help="how documents are grouped into runs and records into shards: 'beam' (GroupByKey, "
             "right on Dataflow/Flink/Spark), 'files' (spill files in the staging directory: "
             "memory flat in the corpus size on Beam's local runners, whose shuffle is in "
             "memory) or 'auto' (files on DirectRunner and PortableRunner --job_endpoint=embed, "
             "beam elsewhere); the records are identical (default: %(default)s)")
    add("--shuffle_buffer_bytes", type=int, default=grouping.DEFAULT_BUFFER_BYTES,
        help="with --shuffle=files: bytes a bundle holds before it writes a spill file "
             "(default: %(default)s)")
    add("--break_lock", action="store_true",
        help="remove a stale lock (--output_dir/.lock) left by a killed job; only when you know "
             "no job runs there")

    group = parser.add_argument_group("runner")
    add = group.add_argument
    add("--runner_config", default=None,
        help="a runner config name in runner_configs/ (direct, portable_embed, dataflow_gpu, "
             "flink, spark) or a YAML path; its flags come first, command-line flags override")
    add("--fail_once_for_testing", default=None, help=argparse.SUPPRESS)


HELP_EPILOG = """Beam's own flags (--runner, --direct_num_workers, Dataflow's --project/--region/--worker_*,
portable --job_endpoint, ...) are accepted too: list them with
  python -m beam_pipeline --help_beam
Decode a finished run back to text and compare it with its source:
  python -m beam_pipeline.verify --output_dir=DIR"""


def help_parser() -> argparse.ArgumentParser:
  """The parser `--help` prints: the job's flags, grouped, with their defaults."""
  parser = argparse.ArgumentParser(
      prog="python -m beam_pipeline", epilog=HELP_EPILOG,
      formatter_class=argparse.RawDescriptionHelpFormatter,
      description="Compress a corpus with every method of Lester et al. (2024) into TFRecords "
                  "that the SeqIO tasks read.")
  CompressionOptions._add_argparse_args(parser)  # pylint: disable=protected-access
  return parser


def beam_parser() -> argparse.ArgumentParser:
  """A parser holding every flag Beam knows (all PipelineOptions classes), as Beam builds it."""
  # Importing the runners registers their options classes (Flink, Spark, Dataflow, ...).
  from apache_beam.options import pipeline_options as po
  parser = po._BeamArgumentParser(  # pylint: disable=protected-access
      prog="python -m beam_pipeline", allow_abbrev=False)
  seen = {}
  for cls in PipelineOptions.__subclasses__():
    seen.setdefault(str(cls), cls)
  for cls in seen.values():
    cls._add_argparse_args(parser)  # pylint: disable=protected-access
  return parser


def check_known_flags(argv: list[str], extra: argparse.ArgumentParser | None = None) -> None:
  """ConfigError for any flag neither the job nor Beam knows (Beam itself only warns, and a
  mistyped --ouput_dir would silently write to the default). Suggests the closest flag."""
  parser = beam_parser()
  _, unknown = parser.parse_known_args(argv)
  if extra is not None:
    extra_names = {o for action in extra._actions for o in action.option_strings}  # pylint: disable=protected-access
    rest, skip_value = [], False
    for arg in unknown:
      if skip_value and not arg.startswith("-"):
        skip_value = False
        continue
      skip_value = arg in extra_names  # '--name value': the value comes next
      if arg.split("=", 1)[0] not in extra_names:
        rest.append(arg)
    unknown = rest
  flags = [a for a in unknown if a.startswith("-")]
  if not flags and unknown:
    raise ConfigError(f"unexpected argument {unknown[0]!r}: flags take the form --name=value")
  if not flags:
    return
  names = [o for action in parser._actions for o in action.option_strings]  # pylint: disable=protected-access
  if extra is not None:
    names += [o for action in extra._actions for o in action.option_strings]  # pylint: disable=protected-access
  bad = flags[0].split("=", 1)[0]
  close = difflib.get_close_matches(bad, names, n=1)
  hint = f" (did you mean {close[0]}?)" if close else ""
  raise ConfigError(f"unknown flag {bad}{hint}; see python -m beam_pipeline --help")


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
