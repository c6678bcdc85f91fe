"""bits/byte from scores and raw_bytes (by hand and through seqio's Evaluator), and ratios."""
from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import pytest
import seqio
import tensorflow as tf

import seqio_tasks
from neural_compression import methods
from neural_compression import output_layout as layout
from seqio_tasks import data
from seqio_tasks import metrics


def test_bits_per_byte_of_known_scores():
  # Two examples: log-likelihoods -100 and -50.5 nats over 40 + 60 bytes.
  # By hand: 150.5 nats / ln 2 = 217.12560 bits, / 100 bytes = 2.1712560 bits/byte.
  out = metrics.bits_per_byte([40, 60], [-100.0, -50.5])
  assert out["bits_per_byte"] == pytest.approx(2.1712560, abs=1e-6)
  assert out["raw_bytes"] == 100
  assert out["log_likelihood_nats"] == pytest.approx(-150.5)
  # The paper's form: tokens/bytes * loss per token / ln 2 gives the same figure.
  assert metrics.bits_per_byte_from_loss(150.5 / 70, 70, 100) == pytest.approx(
      out["bits_per_byte"])
  # A uniform model over 2**16 tokens spends 16 bits per token.
  tokens, nbytes = 512, 1490
  uniform = metrics.bits_per_byte([nbytes], [-tokens * math.log(65536)])
  assert uniform["bits_per_byte"] == pytest.approx(16 * tokens / nbytes)


def test_bits_per_byte_refuses_bad_input():
  with pytest.raises(ValueError):
    metrics.bits_per_byte([10], [-1.0, -2.0])
  with pytest.raises(ValueError):
    metrics.bits_per_byte([0], [-1.0])


def test_postprocess_turns_targets_into_raw_bytes():
  example = {"targets": np.arange(3), "raw_bytes": np.int64(1234)}
  assert metrics.targets_to_raw_bytes("text", example=example, is_target=True) == 1234
  assert metrics.targets_to_raw_bytes("prediction", example=example) == "prediction"
  with pytest.raises(ValueError, match="raw_bytes"):
    metrics.targets_to_raw_bytes("text", example={"targets": 1}, is_target=True)


def test_tasks_declare_bits_per_byte_as_a_score_metric():
  task = seqio.get_mixture_or_task("c4_equal_info_ac_b16_v65k")
  assert list(task.score_metric_fns) == [metrics.bits_per_byte]
  assert not task.predict_metric_fns
  # seqio wraps the postprocess_fn; it still maps a target to its example's raw_bytes.
  assert task.postprocess_fn("text", example={"raw_bytes": np.int64(5)}, is_target=True) == 5
  assert len(task.metric_objs) == 1  # seqio accepts the signature (targets, scores)


@pytest.mark.parametrize("method", ["static_equal_info_ac:b16:v65k", "bytes", "spm:v400"])
def test_evaluator_reports_bits_per_byte(run_dir, method):
  """seqio.Evaluator + a uniform 'model' score_fn: bits/byte = tokens * log2(V) / raw bytes."""
  task = seqio.get_mixture_or_task(seqio_tasks.task_name(method))
  vocab = task.output_features["targets"].vocabulary
  method_vocab = vocab.vocab_size - 3
  evaluator = seqio.Evaluator(
      mixture_or_task_name=task.name,
      feature_converter=seqio.DecoderFeatureConverter(pack=False),
      eval_split="validation", sequence_length={"targets": 128}, logger_cls=())

  def score_fn(ds):
    # A uniform distribution over the method's tokens: -ln(V) nats per target token (T5X's
    # score is the sum of the target tokens' log-likelihoods).
    out = []
    for index, features in ds.as_numpy_iterator():
      tokens = int(features["decoder_loss_weights"].sum())
      out.append((int(index), -tokens * math.log(method_vocab)))
    return out

  result, _ = evaluator.evaluate(compute_metrics=True, score_fn=score_fn)
  reported = result.result()[task.name]
  # By hand from the records on disk.
  slug = methods.parse_method(method).slug
  files = tf.io.gfile.glob(layout.file_pattern(run_dir, slug, "validation"))
  tokens = nbytes = 0
  for record in tf.data.TFRecordDataset(files).as_numpy_iterator():
    f = tf.train.Example.FromString(record).features.feature
    tokens += len(f[layout.TARGETS].int64_list.value)
    nbytes += f[layout.RAW_BYTES].int64_list.value[0]
  assert reported["raw_bytes"] == nbytes
  assert reported["bits_per_byte"] == pytest.approx(tokens * math.log2(method_vocab) / nbytes)


def test_compression_ratios_from_stats(run_dir):
  stats = data.read_stats(run_dir)
  assert stats == json.loads((pathlib.Path(run_dir) / layout.STATS).read_text())
  ratios = metrics.compression_ratios(stats)
  for slug, figures in stats.items():
    s = figures["validation"]
    assert ratios[slug]["token_compression_ratio"] == pytest.approx(
        s["input_bytes"] / s["tokens"])
    assert ratios[slug]["token_compression_ratio"] == pytest.approx(
        s["token_compression_ratio"])
    assert ratios[slug]["bit_compression_ratio"] == pytest.approx(s["bit_compression_ratio"])
  # Bytes: one token per byte; EqualInfoAC b16 v65k: 16-bit tokens, so bits = 2 x tokens ratio.
  assert ratios["bytes"]["token_compression_ratio"] == 1.0
  eq = ratios["static_equal_info_ac_b16_v65k"]
  assert eq["bit_compression_ratio"] == pytest.approx(eq["token_compression_ratio"] / 2)
  assert metrics.token_compression_ratio(stats, "gzip_v256", "train") == pytest.approx(
      stats["gzip_v256"]["train"]["input_bytes"] / stats["gzip_v256"]["train"]["tokens"])
