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
]

EXTRAS = {
    # experiments/ (plots of docs/results.md); the tests check the report script too.
    "experiments": ["matplotlib==3.10.7"],
    "test": ["pytest==9.2.0", "hypothesis==6.170.15", "pytest-timeout==2.4.0",
             "matplotlib==3.10.7"],
    # GPU workers (Dataflow/Flink image): CUDA-enabled JAX for the exact M1 engine's JAX backend.
    "gpu": ["jax[cuda12]==0.10.2"],
}

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
