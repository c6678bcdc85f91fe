"""M2: the model trained over compressed tokens. train.py is its small-scale trainer (it feeds
from the SeqIO tasks, imported when it runs, not when this package is imported)."""
