"""Fixtures shared by several test files."""
import pytest


@pytest.fixture
def run_dir():
  """A tiny real pipeline run (built once per session), set as the SeqIO data directory."""
  import seqio_tasks
  from tests.test_seqio_tasks import make_test_run
  out, _ = make_test_run()
  previous = seqio_tasks.set_data_dir(out)
  yield out
  seqio_tasks.set_data_dir(previous)
