"""benchmarks/gpu_check.sh in JAX-CPU mode: the GPU determinism matrix, run where no GPU is."""
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_gpu_check_passes_in_jax_cpu_mode():
  pytest.importorskip("jax")
  out = subprocess.run(
      ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu", "--examples", "2",
       "--example_bytes", "400", "--contexts", "48"],
      # PYTHONPATH: this tree's package, not whichever one the virtualenv has installed.
      cwd=ROOT, env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
      capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stdout + out.stderr
  assert "gpu_check: all identical" in out.stdout
  assert out.stdout.count("  ok   ") == 11 and "FAIL" not in out.stdout
  assert "compiled CPU encodings identical" in out.stdout
