"""`make t5x`: T5X at the pinned commits in the same virtualenv, the project's pins untouched.

The installed packages are checked against setup.py (RUNTIME_PINS, EXTRAS['t5x'],
T5X_FROM_GITHUB); the Makefile's two sources (the wheels directory where it exists, else GitHub)
are checked by running its recipe with a recording stand-in for pip (no network here), which
must be handed exactly setup.py's commits.
"""
import importlib.metadata
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from tests.test_runner_configs import setup_py

REPO = pathlib.Path(__file__).resolve().parent.parent


def _setup_value(name: str):
  import ast
  for node in ast.walk(ast.parse((REPO / "setup.py").read_text())):
    if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == name:
      return ast.literal_eval(node.value)
  raise KeyError(name)


def _name_and_version(pin: str) -> tuple[str, str]:
  name, version = pin.split("==")
  return re.sub(r"\[.*\]", "", name), version


def test_runtime_pins_are_installed_unchanged():
  pins, extras, _ = setup_py()
  for pin in pins + extras["t5x"]:
    name, version = _name_and_version(pin)
    assert importlib.metadata.version(name) == version, pin


def test_t5x_extra_is_its_own_and_pins_no_runtime_package():
  pins, extras, _ = setup_py()
  runtime = {_name_and_version(p)[0].lower() for p in pins}
  extra = {_name_and_version(p)[0].lower() for p in extras["t5x"]}
  assert extra and not extra & runtime
  assert not any("t5x" in p.lower() for p in pins)


@pytest.mark.parametrize("package", ["t5x", "airio", "jestimator"])
def test_t5x_packages_are_the_pinned_commits(package):
  source = next(s for s in _setup_value("T5X_FROM_GITHUB") if f"/{package}@" in s)
  commit = re.search(r"@([0-9a-f]{40})", source).group(1)
  dist = importlib.metadata.distribution(package)
  direct_url = json.loads(dist.read_text("direct_url.json") or "{}")
  if "vcs_info" in direct_url:  # installed from GitHub
    assert direct_url["vcs_info"]["commit_id"] == commit
  else:  # from a wheel: its local version label names the commit
    assert dist.version.endswith(f"+g{commit[:7]}"), dist.version


def _run_make_t5x(tmp_path: pathlib.Path, wheels: pathlib.Path) -> list[str]:
  """`make t5x` into a scratch VENV whose python records pip calls and runs the rest."""
  venv = tmp_path / "venv"
  (venv / "bin").mkdir(parents=True)
  log = tmp_path / "pip.log"
  fake = venv / "bin" / "python"
  # pip calls and the closing import check are recorded; the rest (reading setup.py) runs.
  fake.write_text(f'#!/bin/bash\ncase "$1 $2" in "-m pip"|"-c import t5x"*) echo "$@" >> {log}; '
                  f'exit 0;; esac\nexec {sys.executable} "$@"\n')
  fake.chmod(0o755)
  subprocess.run(["make", "--no-print-directory", "t5x", f"VENV={venv}",
                  f"T5X_WHEELS={wheels}"], cwd=REPO, check=True, capture_output=True,
                 text=True)
  return log.read_text().splitlines()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_t5x_installs_from_github_where_there_are_no_wheels(tmp_path):
  calls = _run_make_t5x(tmp_path, tmp_path / "no_wheels")
  t5x_calls = [c for c in calls if "--no-deps" in c and "git+" in c]
  assert len(t5x_calls) == 1
  sources = _setup_value("T5X_FROM_GITHUB")
  assert t5x_calls[0].endswith(" ".join(sources))
  assert f"--src {tmp_path / 'venv' / 'src'}" in t5x_calls[0]
  assert any(c.endswith("install --quiet -e .[test,t5x]") for c in calls)
  assert calls[-1].startswith("-c import t5x.train, t5x.eval, t5x.infer")


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_t5x_installs_the_wheels_where_they_are(tmp_path):
  wheels = tmp_path / "wheels"
  wheels.mkdir()
  names = ["t5x-0.0.0+gcc342d4-py3-none-any.whl", "airio-0.0.1+g69897df-py3-none-any.whl",
           "jestimator-0.3.3+g326824a-py3-none-any.whl"]
  for name in names:
    (wheels / name).write_bytes(b"")
  calls = _run_make_t5x(tmp_path, wheels)
  t5x_calls = [c for c in calls if "--no-deps" in c and ".whl" in c]
  assert len(t5x_calls) == 1 and not any("git+" in c for c in calls)
  assert t5x_calls[0].split()[-3:] == [str(wheels / n) for n in names]
  assert (tmp_path / "venv" / ".t5x-installed").exists()
  assert os.path.getmtime(tmp_path / "venv" / ".t5x-installed") >= os.path.getmtime(
      tmp_path / "venv" / ".installed")


def test_readme_installs_the_same_commits():
  readme = (REPO / "README.md").read_text()
  block = re.search(r"```sh\npip install -e '\.\[t5x\]'\n(.*?)```", readme, re.S).group(1)
  urls = re.findall(r"'(git\+[^']+)'", block)
  assert urls == [s.removeprefix("-e ") for s in _setup_value("T5X_FROM_GITHUB")]
  assert "-e 'git+https://github.com/google-research/t5x@" in block  # editable, see setup.py
