"""Training-data preprocessing over neurally compressed text (Lester et al., 2024).

Runtime pins live here and only here (RUNTIME_PINS); the Makefile, the Dockerfile and the tests read
them from this file.
"""
import setuptools

RUNTIME_PINS = [
    "apache-beam[tfrecord]==2.77.0",
    "tensorflow==2.21.0",
    "tensorflow-text==2.21.1",
    "tensorflow-datasets==4.9.10",
    "seqio==0.0.20",
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    # 0.2.3 breaks `import seqio` (protobuf gencode mismatch).
    "sentencepiece==0.2.2",
    "gin-config==0.5.0",
    "protobuf==6.33.6",
    "numpy==2.4.6",
    # The exact M1 engine runs BLAS single-threaded (see m1/engine/model.py).
    "threadpoolctl==3.6.0",
    # The compiled coder (neural_compression/coding/compiled_coder.py); wheels, no compiler.
    "numba==0.68.1",
    # Inflating gzip/deflate input (beam_pipeline/sources/streams.py): ISA-L, 2.6x zlib here.
    "isal==1.9.1",
    # TFRecord CRC-32C: Beam takes google-crc32c when it is installed (0.25 us per 4 KB record
    # here), else crcmod's table-driven C (9 us).
    "google-crc32c==1.9.0",
]

EXTRAS = {
    # experiments/ (plots of docs/results.md); the tests check the report script too.
    "experiments": ["matplotlib==3.10.7"],
    "test": ["pytest==9.2.0", "hypothesis==6.170.15", "pytest-timeout==2.4.0",
             "matplotlib==3.10.7"],
    # GPU workers (Dataflow/Flink image): CUDA-enabled JAX for the exact M1 engine's JAX backend.
    "gpu": ["jax[cuda12]==0.10.2"],
    # Training M2 with T5X (seqio_tasks/gin/): what T5X_FROM_GITHUB's three packages need from PyPI
    # beyond the runtime pins, which stay as they are (tests/test_t5x_install.py checks both).
    "t5x": ["grain==0.2.12", "cached-property==2.0.1", "tensorboard==2.21.0", "fiddle==0.3.1"],
}

# T5X is not on PyPI; neither is airio, and jestimator's PyPI release (0.3.3) does not import with
# the pinned JAX. `make t5x` (and so `make test`) installs them with --no-deps: from the wheels of
# these commits in $(T5X_WHEELS) (../shared/wheels) where that directory exists, otherwise from
# GitHub. T5X goes in editable (-e): its t5x/examples/decoder_only/ has no __init__.py, so a
# non-editable install of the commit leaves out the network.py that seqio_tasks/gin/ uses.
T5X_FROM_GITHUB = [
    "-e git+https://github.com/google-research/t5x"
    "@cc342d419ec3e3e9c4bf1df33c82330cafdc1e16#egg=t5x",
    "git+https://github.com/google/airio@69897df7d9a427b947a9f7bb4164c7782b43e601",
    "git+https://github.com/google-research/jestimator@326824a477feef6d92e6f44175000907a72899ca",
]

setuptools.setup(
    name="neural-compressed-text",
    version="0.1.0",
    description="Beam/SeqIO preprocessing for training LLMs over neurally compressed text",
    python_requires=">=3.11,<3.12",
    packages=setuptools.find_packages(include=[
        "neural_compression", "neural_compression.*",
        "beam_pipeline", "beam_pipeline.*",
        "seqio_tasks", "seqio_tasks.*",
    ]),
    package_data={"seqio_tasks": ["gin/*.gin", "gin/**/*.gin"]},
    install_requires=RUNTIME_PINS,
    extras_require=EXTRAS,
)
