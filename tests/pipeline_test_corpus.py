"""A small generated corpus for pipeline tests (no third-party text): pseudo-English documents."""
from __future__ import annotations

import gzip
import json
import pathlib
import random

_SYLLABLES = ["ka", "lo", "mi", "ren", "sa", "tu", "vel", "no", "qui", "bra", "de", "fi", "ost",
              "an", "er", "ing", "th", "e", "o", "u"]


def make_documents(count: int, seed: int = 0, mean_words: int = 200) -> list[dict]:
  """C4-shaped records with reproducible pseudo-words, punctuation, digits and a little UTF-8."""
  rng = random.Random(seed)
  vocab = ["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 3))) for _ in range(300)]
  docs = []
  for i in range(count):
    words = [rng.choice(vocab) for _ in range(rng.randint(mean_words // 2, mean_words * 3 // 2))]
    for j in range(0, len(words), rng.randint(6, 14)):
      words[j] = words[j].capitalize()
      if j:
        words[j - 1] += rng.choice([".", ",", ";", ". Über", " — 42."])
    text = " ".join(words) + "."
    if i % 5 == 0:
      text += "\n\nNaïve café: ü, ß, 日本, emoji \U0001F600."
    docs.append({"text": text, "url": f"https://example.test/doc/{seed}/{i}",
                 "timestamp": f"2020-01-{1 + i % 28:02d}T00:00:00Z"})
  return docs


def write_c4_shards(directory: pathlib.Path, docs: list[dict], shards: int = 2) -> str:
  """Writes docs as gzipped C4 JSON shards; returns their glob pattern."""
  directory.mkdir(parents=True, exist_ok=True)
  for s in range(shards):
    with gzip.open(directory / f"c4-train.{s:05d}-of-{shards:05d}.json.gz", "wt",
                   encoding="utf-8") as f:
      for doc in docs[s::shards]:
        f.write(json.dumps(doc) + "\n")
  return str(directory / "c4-train.*.json.gz")
