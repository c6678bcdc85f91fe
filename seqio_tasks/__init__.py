"""SeqIO tasks, vocabularies and metrics for M2 and the baselines (see README.md).

`import seqio_tasks` registers the Task `c4_<slug>` of every method (tasks.py), with the
vocabulary of its family (vocabularies.py) and the bits/byte metric (metrics.py); sampling.py
adds their prompted twins, for sampling M2 with T5X, and reads the samples back as text. The
data directory is $NCC_DATA_DIR (default './output'), overridden by `set_data_dir(...)` in
Python or `seqio_tasks.set_data_dir.data_dir = '...'` in gin, and resolved when data is read.

This package never imports beam_pipeline; both share only `neural_compression`.
"""
from seqio_tasks import data
from seqio_tasks import metrics
from seqio_tasks import sampling
from seqio_tasks import tasks
from seqio_tasks import vocabularies
from seqio_tasks.data import DamagedDataError
from seqio_tasks.data import get_data_dir
from seqio_tasks.data import MissingDataError
from seqio_tasks.data import set_data_dir
from seqio_tasks.data import verify_checksums
from seqio_tasks.data import verify_run
from seqio_tasks.metrics import bits_per_byte
from seqio_tasks.sampling import prompt_task_name
from seqio_tasks.tasks import register_method_task
from seqio_tasks.tasks import task_name
from seqio_tasks.vocabularies import padded_vocab_size
from seqio_tasks.vocabularies import vocabulary_for

__all__ = ["data", "metrics", "sampling", "tasks", "vocabularies", "get_data_dir",
           "MissingDataError", "DamagedDataError", "set_data_dir", "verify_checksums",
           "verify_run", "bits_per_byte", "prompt_task_name", "register_method_task", "task_name",
           "padded_vocab_size", "vocabulary_for"]
