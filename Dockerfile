# Beam SDK worker image for Dataflow (custom container) and Flink/Spark (DOCKER environment):
# our package, the shipped M1 checkpoint and CUDA-enabled JAX for GPU workers.
#   docker build -t $IMAGE . && docker push $IMAGE
FROM apache/beam_python3.11_sdk:2.77.0

ENV PIP_NO_CACHE_DIR=1
WORKDIR /opt/neural_compression
COPY setup.py ./
COPY requirements/ requirements/
COPY neural_compression/ neural_compression/
COPY beam_pipeline/ beam_pipeline/
COPY seqio_tasks/ seqio_tasks/
COPY m1_checkpoint/ m1_checkpoint/
COPY runner_configs/ runner_configs/
# The GPU extra pulls CUDA-enabled jaxlib; on CPU-only workers JAX falls back to the CPU.
RUN pip install '.[gpu]' \
 && pip install --no-deps --require-hashes -r requirements/corpus.txt

# The Beam SDK harness is the image's entrypoint (inherited from the base image).
