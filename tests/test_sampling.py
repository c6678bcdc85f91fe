"""Prompted task twins and sample decoding (seqio_tasks/sampling.py, print_samples.py).

On the shared tiny pipeline run (tests/test_seqio_tasks.make_test_run); T5X's own predict output
is tests/test_t5x.py's. Here the "samples" are the records' real continuations (which must decode
to the record) and corrupted ones (which must not).
"""
import json

import numpy as np
import pytest
import seqio

import seqio_tasks
from seqio_tasks import print_samples
from seqio_tasks import sampling
from seqio_tasks import vocabularies
from tests.test_seqio_tasks import M2_LENGTH

PROMPT, CONTINUATION = 16, 64
# A windowed method with 2 tokens per window, a whole-example stream (no windows), bytes.
METHODS = ("static_equal_info_ac:b32:v256", "static_ac:v256", "gzip:v256", "bytes")


def _records(method):
  task = seqio.get_mixture_or_task(seqio_tasks.task_name(method))
  return list(task.get_dataset({"targets": M2_LENGTH}, split="validation", shuffle=False)
              .as_numpy_iterator())


@pytest.mark.parametrize("method", METHODS)
def test_prompt_task_splits_each_record_into_prompt_and_continuation(run_dir, method):
  name = seqio_tasks.prompt_task_name(seqio_tasks.task_name(method))
  assert name == seqio_tasks.task_name(method) + "_prompt"
  assert seqio_tasks.prompt_task_name(seqio_tasks.task_name(method)) == name  # registered once
  prompted = list(seqio.get_mixture_or_task(name).get_dataset(
      {"inputs": PROMPT, "targets": CONTINUATION}, split="validation", shuffle=False)
                  .as_numpy_iterator())
  records = [r for r in _records(method) if len(r["targets"]) > PROMPT]
  assert len(prompted) == len(records) > 0
  for p, r in zip(prompted, records):
    assert p["example_id"] == r["example_id"] and p["chunk"] == r["chunk"]
    np.testing.assert_array_equal(p["inputs"], r["targets"][:PROMPT])
    np.testing.assert_array_equal(p["targets"], r["targets"][PROMPT:PROMPT + CONTINUATION])


@pytest.mark.parametrize("method", METHODS)
def test_a_real_continuation_decodes_to_the_record(run_dir, method):
  vocab = seqio_tasks.vocabulary_for(method)
  record = next(r for r in _records(method) if len(r["targets"]) > PROMPT + CONTINUATION)
  ids = record["targets"][:PROMPT + CONTINUATION]
  sample = sampling.decode_sample(vocab, ids[:PROMPT], ids[PROMPT:],
                                  record["example_id"].decode(), int(record["chunk"]))
  whole = vocab.decode_symbols(ids, strict=True)
  prompt = vocab.decode_symbols(ids[:PROMPT], strict=True)
  assert sample.decodes and sample.tokens == CONTINUATION
  assert sample.prompt_text == vocabularies.symbols_to_text(prompt)
  assert sample.text == vocabularies.symbols_to_text(whole[len(prompt):])
  assert len(whole) > len(prompt)
  # T5X's padding after the sample and its EOS stop are not sampled tokens.
  padded = np.concatenate([ids[PROMPT:], [vocabularies.EOS_ID, 0, 0]])
  assert sampling.decode_sample(vocab, ids[:PROMPT], padded) == sampling.decode_sample(
      vocab, ids[:PROMPT], ids[PROMPT:])


@pytest.mark.parametrize("method", ["static_ac:v256", "bytes"])
def test_ids_outside_the_method_do_not_decode(run_dir, method):
  vocab = seqio_tasks.vocabulary_for(method)
  ids = _records(method)[0]["targets"]
  padded = seqio_tasks.padded_vocab_size(vocab)
  for bad in ([vocabularies.UNK_ID], [vocab.vocab_size], [padded - 1]):
    sample = sampling.decode_sample(vocab, ids[:PROMPT], np.concatenate([ids[PROMPT:40], bad]))
    assert not sample.decodes, bad


def test_print_samples_reads_t5x_predict_lines(run_dir, tmp_path, capsys):
  method = "static_ac:v256"
  records = [r for r in _records(method) if len(r["targets"]) > PROMPT]
  # The fields T5X's write_inferences_to_file writes with runs/m2_sample.gin's settings.
  lines = [{"inputs": {"example_id": r["example_id"].decode(), "chunk": int(r["chunk"]),
                       "inputs": r["targets"][:PROMPT].tolist()},
            "prediction": "", "prediction_tokens": r["targets"][PROMPT:].tolist()}
           for r in records]
  lines[0]["prediction_tokens"] = [vocabularies.UNK_ID]
  path = tmp_path / "c4_static_ac_v256_prompt-predict.jsonl-00000-of-00001"
  path.write_text("".join(json.dumps(line) + "\n" for line in lines))
  (tmp_path / (path.name + ".COMPLETED")).write_text("")
  assert print_samples.main([f"--method={method}", f"--predictions={tmp_path}/*.jsonl-*",
                             f"--data_dir={run_dir}"]) == 0
  printed = capsys.readouterr()
  out = [json.loads(line) for line in printed.out.splitlines()]
  assert [o["example_id"] for o in out] == [line["inputs"]["example_id"] for line in lines]
  assert [o["decodes"] for o in out] == [False] + [True] * (len(lines) - 1)
  assert f"{len(lines) - 1} of {len(lines)} samples decode" in printed.err
  with pytest.raises(FileNotFoundError):
    list(sampling.read_predictions(str(tmp_path / "nothing-*")))
