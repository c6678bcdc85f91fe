"""M1's model card: MODEL_CARD.md beside every export, saying what M1 was trained on and how well
it does (the same dict is the checkpoint's config.json metadata)."""
from __future__ import annotations

import pathlib

CARD_NOTES = [
    "Bits/byte count EOS as a byte and renormalize over the 257 coder symbols (what",
    "the arithmetic coder pays before CDF quantization). Full context: each evaluated",
    "10,240-symbol validation example (runs of 128 documents) is coded from an empty",
    "context with no resets, attending to all earlier symbols of the example;",
    "validation_bytes_evaluated says how much of the validation examples that covers",
    "(periodic evaluations use a few evenly spaced examples, the final one all of them).",
    "After reset: mean over the first 16 symbols of 512 validation segments that start",
    "at arbitrary offsets with no left context (as in every equal-info window).",
]


def card_lines(card: dict) -> list[str]:
  """The card's markdown lines: header, one table row per field, the notes on the figures."""
  lines = [
      "# M1 checkpoint (byte-level model for arithmetic coding)", "",
      "Byte-level decoder-only Transformer (Lester et al. 2024, M1), trained by",
      "`neural_compression/m1/train.py`; load with `neural_compression.transformer.numpy_inference."
      "load_model` (numpy only).", "",
      "| field | value |", "|---|---|",
  ]
  lines += [f"| {key} | {value} |" for key, value in card.items()]
  return lines + [""] + CARD_NOTES + [""]


def write_model_card(directory: pathlib.Path, card: dict) -> None:
  """Writes directory/MODEL_CARD.md from the card's fields (training data, settings, figures)."""
  (pathlib.Path(directory) / "MODEL_CARD.md").write_text("\n".join(card_lines(card)))
