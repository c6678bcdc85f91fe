"""Sampling M2 with T5X and reading the samples back as text.

T5X samples a decoder-only model with `t5x/infer.py` in mode 'predict', which needs a prompt: the
batch must have `inputs` (T5X prefills the model with them and samples the `targets` positions).
Our tasks are targets-only, so each task `c4_<slug>` has a prompted twin `c4_<slug>_prompt`
(registered on first use by `prompt_task_name`, which seqio_tasks/gin/runs/m2_sample.gin calls):
every validation record whose tokens outnumber the prompt length P becomes

  inputs   its first P tokens (P = TASK_FEATURE_LENGTHS['inputs'], e.g. 64)
  targets  its next tokens, up to TASK_FEATURE_LENGTHS['targets'] (the real continuation;
           T5X only takes their length, the number of tokens it samples)

T5X writes one JSON line per prompt with the sampled ids (`prediction_tokens`, through
m2_sample.gin's `output_ids = True`), the prompt ids (`inputs`) and its own `prediction`: the
vocabulary's decode of the sampled ids alone. That text is exact where a prompt ends on a token
boundary that is also a coding boundary (bytes, SentencePiece, EqualInfoAC whose window b is one
token); a continuation of an AC, StaticAC or GZip stream, or of a window that spans tokens, only
decodes together with its prompt. `decode_sample` therefore decodes prompt + sample as one
stream and splits the symbols at the prompt's; `python -m seqio_tasks.print_samples` prints
that text for a predictions file.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Iterator, Mapping, Sequence

import gin
import numpy as np
import seqio
import tensorflow as tf

from seqio_tasks import tasks
from seqio_tasks import vocabularies

PROMPT_SUFFIX = "_prompt"


def _prompt_and_continuation(dataset: tf.data.Dataset,
                             sequence_length: Mapping[str, int]) -> tf.data.Dataset:
  """Task examples -> {inputs: first P tokens, targets: the next ones} (records longer than P)."""
  prompt = int(sequence_length["inputs"])
  continuation = int(sequence_length["targets"])

  def split(example):
    targets = example["targets"]
    return {**example, "inputs": targets[:prompt],
            "targets": targets[prompt:prompt + continuation]}

  # No length check here (to_model_features without a length): a record longer than P + the
  # continuation length is a longer prompt source, not a trimmed bits/byte record.
  dataset = tasks.to_model_features(dataset)
  return dataset.filter(lambda ex: tf.size(ex["targets"]) > prompt).map(split)


@gin.configurable(module="seqio_tasks")
def prompt_task_name(task_name: str = gin.REQUIRED) -> str:
  """Registers (once) the prompted twin of a task and returns its name, `<task_name>_prompt`.

  Args:
    task_name: a registered task of this package, e.g. 'c4_equal_info_ac_b16_v65k'.
  """
  name = task_name + PROMPT_SUFFIX
  if name in seqio.TaskRegistry.names():
    return name
  task = seqio.get_mixture_or_task(task_name)
  if not isinstance(task.source, tasks.PipelineDataSource):
    raise ValueError(f"{task_name!r} is not a task of seqio_tasks (see seqio_tasks.task_name)")
  vocab = task.output_features["targets"].vocabulary
  feature = seqio.Feature(vocabulary=vocab, add_eos=False, dtype=tf.int32, rank=1)
  seqio.TaskRegistry.add(name, source=tasks.PipelineDataSource(task.source.spec.name),
                         preprocessors=[_prompt_and_continuation],
                         output_features={"inputs": feature, "targets": feature})
  return name


@dataclasses.dataclass(frozen=True)
class Sample:
  """One sampled continuation, read back through the method's vocabulary."""
  example_id: str  # the record the prompt came from: example_id and chunk
  chunk: int
  prompt_text: str  # the prompt's symbols as text (vocabularies.symbols_to_text)
  text: str  # the sampled continuation's symbols as text
  tokens: int  # sampled model ids (T5X stops at EOS and pads with 0; neither is counted)
  decodes: bool  # every sampled id is a method token and prompt + sample decode exactly


def decode_sample(vocab: vocabularies.CompressedTextVocabulary, prompt_ids: Sequence[int],
                  sample_ids: Sequence[int], example_id: str = "", chunk: int = 0) -> Sample:
  """Decodes a prompt and its sampled continuation as one token stream (module docstring).

  Args:
    vocab: the method's vocabulary (ids as the model sees them, PAD 0 / EOS 1 / UNK 2).
    prompt_ids: the prompt's model ids (T5X's `inputs`).
    sample_ids: the sampled model ids (T5X's `prediction_tokens`).
    example_id, chunk: the record the prompt came from.

  Returns:
    A Sample. A continuation that does not decode (ids past the method's vocabulary, UNK, or a
    stream the decoder rejects) has `decodes` False and the text of its longest decodable prefix.
  """
  prompt = np.asarray(prompt_ids, np.int64)
  sample = np.asarray(sample_ids, np.int64)
  sample = sample[(sample != vocabularies.PAD_ID) & (sample != vocabularies.EOS_ID)]
  prompt_symbols = vocab.decode_symbols(prompt)
  stream = np.concatenate([prompt, sample])
  in_vocabulary = bool(np.all((sample >= vocabularies.ID_OFFSET) & (sample < vocab.vocab_size)))
  try:
    symbols = vocab.decode_symbols(stream, strict=True)
    decodes = in_vocabulary
  except ValueError:
    symbols = vocab.decode_symbols(stream)
    decodes = False
  if not np.array_equal(symbols[:len(prompt_symbols)], prompt_symbols):
    decodes = False  # the sample changed how the prompt decodes: not a continuation
  return Sample(example_id=example_id, chunk=chunk,
                prompt_text=vocabularies.symbols_to_text(prompt_symbols),
                text=vocabularies.symbols_to_text(symbols[len(prompt_symbols):]),
                tokens=len(sample), decodes=decodes)


def read_predictions(pattern: str) -> Iterator[dict]:
  """The JSON lines of T5X predict output files (a glob on any TF filesystem), in file order."""
  paths = sorted(p for p in tf.io.gfile.glob(pattern) if not p.endswith(".COMPLETED"))
  if not paths:
    raise FileNotFoundError(f"no T5X predictions match {pattern!r}")
  for path in paths:
    with tf.io.gfile.GFile(path) as f:
      for line in f:
        if line.strip():
          yield json.loads(line)


def decode_predictions(vocab: vocabularies.CompressedTextVocabulary,
                       pattern: str) -> list[Sample]:
  """Every sample of T5X predict output written with runs/m2_sample.gin, decoded."""
  out = []
  for record in read_predictions(pattern):
    fields = record.get("inputs", {})
    if "prediction_tokens" not in record or "inputs" not in fields:
      raise ValueError("T5X predictions need `prediction_tokens` and the prompt ids `inputs`: "
                       "sample with seqio_tasks/gin/runs/m2_sample.gin")
    out.append(decode_sample(vocab, fields["inputs"], record["prediction_tokens"],
                             str(fields.get("example_id", "")), int(fields.get("chunk", 0))))
  return out
