"""M2 metrics: bits/byte from T5X scores, and the compression ratios of a run (stats.json).

bits/byte (the paper's headline metric) = (output tokens / input bytes) * (loss per token in
nats) / ln 2 = -sum(log-likelihood in nats over all target tokens) / ln 2 / sum(raw bytes).

How it reaches SeqIO 0.0.20: a score metric is called as metric_fn(targets, scores), where
`scores` are the model's per-example scores (T5X: the sum of the target tokens' log-likelihoods,
in nats) and `targets` are the task's targets after its postprocess_fn, which seqio calls with
the example (`postprocess_fn(decoded_text, example=ex, is_target=True)`). The tasks keep the
record's `raw_bytes` as an extra feature, and `targets_to_raw_bytes` (their postprocess_fn)
turns each target into that count. So a task lists `bits_per_byte` in metric_fns and seqio's
Evaluator (T5X's eval.py, or train.py's infer_eval with score metrics) reports
{'bits_per_byte', 'raw_bytes', 'log_likelihood_nats'} per task.

Cost: seqio decodes every target through the vocabulary before the postprocess_fn sees it, so
an evaluation runs the method's decoder once per validation example (M1 for M1 methods).

Predictions are passed through unchanged (is_target=False); bits/byte needs no predictions.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from neural_compression import output_layout as layout

LN2 = math.log(2.0)


def bits_per_byte_value(total_log_likelihood_nats: float, total_raw_bytes: int) -> float:
  """-log-likelihood (nats) / ln 2 / bytes: bits per source byte (EOS symbols count as bytes)."""
  if total_raw_bytes <= 0:
    raise ValueError(f"bits/byte needs a positive byte count, got {total_raw_bytes}")
  return -float(total_log_likelihood_nats) / LN2 / float(total_raw_bytes)


def targets_to_raw_bytes(target: Any, example: Mapping[str, Any] | None = None,
                         is_target: bool = False) -> Any:
  """The tasks' postprocess_fn: a target becomes its record's raw_bytes (bytes, an int).

  Args:
    target: the decoded target text (targets) or a prediction (is_target=False).
    example: the task example (numpy), holding `raw_bytes`; seqio passes it as a keyword.
    is_target: seqio sets it for targets; predictions pass through unchanged.
  """
  if not is_target:
    return target
  if example is None or layout.RAW_BYTES not in example:
    raise ValueError(f"bits/byte needs the example's {layout.RAW_BYTES!r} feature; keep it in "
                     "the task's output (seqio_tasks' preprocessor does)")
  return int(np.asarray(example[layout.RAW_BYTES]).reshape(()))


def bits_per_byte(targets: Sequence[int], scores: Sequence[float]) -> dict[str, float]:
  """A SeqIO score metric: bits/byte over an evaluation split.

  Args:
    targets: per example, the source bytes its tokens cover (`targets_to_raw_bytes` output).
    scores: per example, the sum of the token log-likelihoods in nats (T5X score output).

  Returns:
    {'bits_per_byte': bits/byte, 'raw_bytes': total bytes, 'log_likelihood_nats': total (nats)}.
  """
  if len(targets) != len(scores):
    raise ValueError(f"{len(targets)} targets but {len(scores)} scores")
  total_bytes = int(sum(int(t) for t in targets))
  total_ll = float(np.sum(np.asarray(scores, np.float64)))
  return {"bits_per_byte": bits_per_byte_value(total_ll, total_bytes),
          "raw_bytes": float(total_bytes),
          "log_likelihood_nats": total_ll}


def bits_per_byte_from_loss(loss_nats_per_token: float, tokens: int, input_bytes: int) -> float:
  """The paper's form: (tokens / bytes) * loss per token (nats) / ln 2."""
  return tokens / input_bytes * loss_nats_per_token / LN2


def token_compression_ratio(stats: Mapping, slug: str, split: str = "validation") -> float:
  """Input bytes per output token of one method and split, from a run's stats.json.

  Computed from the summed counts (not the stored ratio) so that it is exact for the run.
  """
  s = stats[slug][split]
  return s["input_bytes"] / s["tokens"]


def bit_compression_ratio(stats: Mapping, slug: str, split: str = "validation") -> float:
  """Input bits / output bits (8 * bytes / (tokens * log2 vocab)) of one method and split."""
  s = stats[slug][split]
  return 8 * s["input_bytes"] / (s["tokens"] * s["bits_per_token"])


def compression_ratios(stats: Mapping, split: str = "validation") -> dict[str, dict[str, float]]:
  """{slug: {'token_compression_ratio', 'bit_compression_ratio'}} for every method of a run."""
  return {slug: {"token_compression_ratio": token_compression_ratio(stats, slug, split),
                 "bit_compression_ratio": bit_compression_ratio(stats, slug, split)}
          for slug in sorted(stats) if split in stats[slug]}
