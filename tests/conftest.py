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
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "deterministic")
hypothesis.settings.load_profile(PROFILE)

# Hypothesis (6.13x on) also draws literal constants found in the project's own loaded modules,
# so a new module (or `pytest tests` collecting more files than `pytest tests/x.py`) changed the
# "deterministic" draws of every property test: a new file once sent
# test_compiled_coder's reference decoder into a 15-minute example. The pool is emptied, so the
# draws depend on the test alone, as derandomize promises. (Private API: a Hypothesis upgrade
# that renames it fails here, loudly.)
if PROFILE == "deterministic":
  from hypothesis.internal.conjecture import providers as _providers
  _providers._get_local_constants = lambda: _providers._local_constants  # pylint: disable=protected-access


@pytest.fixture
def run_dir():
  """A tiny real pipeline run (built once per session), set as the SeqIO data directory."""
  import seqio_tasks
  from tests.test_seqio_tasks import make_test_run
  out, _ = make_test_run()
  previous = seqio_tasks.set_data_dir(out)
  yield out
  seqio_tasks.set_data_dir(previous)
