"""runner_configs/ and the Dockerfile, checked offline: every config loads into PipelineOptions
with options Beam knows, and the worker image matches setup.py and the configs' paths."""
import ast
import pathlib
import re

import pytest
import yaml
from apache_beam.options import pipeline_options as po

from beam_pipeline import options as options_lib
from beam_pipeline import pipeline

REPO = pathlib.Path(__file__).resolve().parent.parent
CONFIGS = sorted(p.stem for p in (REPO / "runner_configs").glob("*.yaml"))
# Configs whose workers run our image (the others run on this machine's files).
IMAGE_CONFIGS = [n for n in CONFIGS
                 if "${IMAGE}" in (REPO / "runner_configs" / f"{n}.yaml").read_text()]
ENV = {"PROJECT": "my-project", "REGION": "us-central1", "BUCKET": "my-bucket",
       "IMAGE": "gcr.io/my-project/ncc-worker:0.1", "FLINK_JOB_SERVER": "flink-host:8099",
       "SPARK_JOB_SERVER": "spark-host:8099"}


@pytest.fixture
def env(monkeypatch):
  for k, v in ENV.items():
    monkeypatch.setenv(k, v)


def load(name: str) -> po.PipelineOptions:
  return po.PipelineOptions(options_lib.runner_config_args(name))


def setup_py() -> tuple[list[str], dict, str]:
  """(RUNTIME_PINS, EXTRAS, python_requires) read from setup.py without running it."""
  tree = ast.parse((REPO / "setup.py").read_text())
  found = {}
  for node in ast.walk(tree):
    if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
      found[node.targets[0].id] = ast.literal_eval(node.value)
    if isinstance(node, ast.keyword) and node.arg == "python_requires":
      found["python_requires"] = ast.literal_eval(node.value)
  return found["RUNTIME_PINS"], found["EXTRAS"], found["python_requires"]


def test_the_documented_configs_are_all_there():
  assert set(CONFIGS) >= {"direct", "portable_embed", "dataflow_gpu", "flink", "spark"}


@pytest.mark.parametrize("name", CONFIGS)
def test_every_key_is_an_option_beam_or_the_job_knows(name, env):
  config = yaml.safe_load((REPO / "runner_configs" / f"{name}.yaml").read_text())
  known = load(name).view_as(options_lib.CompressionOptions).get_all_options(
      retain_unknown_options=False)
  unknown = [key for key in config if key not in known]
  assert not unknown, f"{name}.yaml: options no PipelineOptions class defines: {unknown}"


def test_dataflow_gpu_config(env):
  opts = load("dataflow_gpu")
  gcp = opts.view_as(po.GoogleCloudOptions)
  worker = opts.view_as(po.WorkerOptions)
  assert opts.view_as(po.StandardOptions).runner == "DataflowRunner"
  assert (gcp.project, gcp.region) == ("my-project", "us-central1")
  assert gcp.temp_location.startswith("gs://my-bucket/")
  assert gcp.staging_location.startswith("gs://my-bucket/")
  # Dataflow job names: lowercase letters, digits and dashes, starting with a letter.
  assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", gcp.job_name)
  accel = [s for s in gcp.dataflow_service_options if s.startswith("worker_accelerator=")]
  assert len(accel) == 1
  fields = dict(f.split(":", 1) if ":" in f else (f, "") for f in
                accel[0].split("=", 1)[1].split(";"))
  assert fields["type"].startswith("nvidia-") and int(fields["count"]) >= 1
  assert "install-nvidia-driver" in fields
  # GPUs attach to N1 machine types only (A2/G2 come with their own); the disk holds the image.
  assert worker.machine_type.startswith(("n1-", "a2-", "g2-"))
  assert worker.disk_size_gb >= 50
  assert worker.sdk_container_image == ENV["IMAGE"]
  assert opts.view_as(po.SetupOptions).sdk_location == "container"
  experiments = opts.view_as(po.DebugOptions).experiments
  assert "use_runner_v2" in experiments  # custom containers need Runner v2
  assert "no_use_multiple_sdk_containers" in experiments  # one process (one M1) per GPU


@pytest.mark.parametrize("name,endpoint", [("flink", "flink-host:8099"),
                                           ("spark", "spark-host:8099")])
def test_portable_cluster_configs_run_our_image(name, endpoint, env):
  opts = load(name)
  portable = opts.view_as(po.PortableOptions)
  assert opts.view_as(po.StandardOptions).runner == "PortableRunner"
  assert portable.job_endpoint == endpoint
  assert portable.environment_type == "DOCKER"
  assert portable.environment_config == ENV["IMAGE"]


def test_local_configs():
  direct = load("direct")
  assert direct.view_as(po.StandardOptions).runner == "DirectRunner"
  assert direct.view_as(po.DirectOptions).direct_running_mode == "multi_processing"
  embed = load("portable_embed").view_as(po.PortableOptions)
  assert (embed.job_endpoint, embed.environment_type) == ("embed", "LOOPBACK")


def test_image_configs_are_the_cluster_ones():
  assert set(IMAGE_CONFIGS) == {"dataflow_gpu", "flink", "spark"}


@pytest.mark.parametrize("name", IMAGE_CONFIGS)
def test_worker_checkpoint_path_is_where_the_image_puts_it(name, env):
  """A config that runs in our image must point --m1_checkpoint at the image's copy."""
  opts = load(name)
  workdir = re.search(r"^WORKDIR\s+(\S+)", (REPO / "Dockerfile").read_text(), re.M).group(1)
  assert opts.view_as(options_lib.CompressionOptions).m1_checkpoint == f"{workdir}/m1_checkpoint"


def test_an_unset_environment_variable_fails_before_the_job(monkeypatch, tmp_path):
  for k in ENV:
    monkeypatch.delenv(k, raising=False)
  with pytest.raises(ValueError, match="BUCKET, IMAGE, PROJECT, REGION"):
    options_lib.runner_config_args("dataflow_gpu")
  with pytest.raises(pipeline.ConfigError, match="FLINK_JOB_SERVER, IMAGE"):
    pipeline.run(["--runner_config=flink", f"--output_dir={tmp_path}/out"])
  with pytest.raises(pipeline.ConfigError, match="known configs: .*dataflow_gpu"):
    pipeline.run(["--runner_config=no_such_runner", f"--output_dir={tmp_path}/out"])
  assert not (tmp_path / "out").exists()


def test_command_line_flags_override_the_config(env):
  argv = options_lib.expand_runner_config(["--runner_config=dataflow_gpu", "--batch_size=64"])
  opts = po.PipelineOptions(argv).view_as(options_lib.CompressionOptions)
  assert opts.batch_size == 64


def test_dockerfile_matches_setup_py():
  dockerfile = (REPO / "Dockerfile").read_text()
  pins, extras, python_requires = setup_py()
  base = re.search(r"^FROM\s+apache/beam_python(\d+)\.(\d+)_sdk:(\S+)", dockerfile, re.M)
  assert base, "the worker image must build on Beam's Python SDK image"
  major, minor, beam_version = base.groups()
  assert f"apache-beam[tfrecord]=={beam_version}" in pins
  # python_requires ">=3.11,<3.12": the image's Python must be that one minor version.
  assert python_requires == f">={major}.{minor},<{major}.{int(minor) + 1}"
  installed = re.findall(r"pip install '\.\[(\w+)\]'", dockerfile)
  assert installed and all(extra in extras for extra in installed)
  jax_version = next(p.split("==")[1] for p in pins if p.startswith("jax=="))
  for extra in installed:
    for pin in extras[extra]:
      if pin.startswith("jax["):
        assert pin.split("==")[1] == jax_version, "the GPU image's JAX must be the pinned JAX"


def test_dockerfile_copies_paths_that_exist():
  copies = re.findall(r"^COPY\s+(.+)$", (REPO / "Dockerfile").read_text(), re.M)
  sources = [src for line in copies for src in line.split()[:-1] if not src.startswith("--")]
  assert sources
  for src in sources:
    assert (REPO / src).exists(), f"Dockerfile copies {src}, which is not in the repository"
  # Everything the package and the workers need at run time goes into the image.
  for needed in ("setup.py", "neural_compression/", "beam_pipeline/", "seqio_tasks/",
                 "m1_checkpoint/", "requirements/"):
    assert needed in sources
