"""Fixtures and settings shared by several test files."""
import os

import hypothesis
import pytest

# `make test` (and so CI) draws the same property-test examples every run: a red CI then means a
# change broke something, never that a new random draw hit an old bug. `make fuzz` searches with
# fresh random seeds instead (HYPOTHESIS_PROFILE=explore); a failure it finds prints a
# @reproduce_failure blob, and the case belongs in a fixed-example test.
hypothesis.settings.register_profile("deterministic", derandomize=True, print_blob=True)
hypothesis.settings.register_profile("explore", derandomize=False, print_blob=True)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))


@pytest.fixture
def run_dir():
  """A tiny real pipeline run (built once per session), set as the SeqIO data directory."""
  import seqio_tasks
  from tests.test_seqio_tasks import make_test_run
  out, _ = make_test_run()
  previous = seqio_tasks.set_data_dir(out)
  yield out
  seqio_tasks.set_data_dir(previous)
