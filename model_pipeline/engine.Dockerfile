# The engine-build image for clusters that reach no package index: the TensorRT container of Triton's release
# with the engine Job's few Python packages preinstalled. Build it where PyPI is reachable, push it to your
# registry and set modelRepository.engineImage; the Job then installs nothing at start.
#   docker build -f model_pipeline/engine.Dockerfile -t <registry>/inference-platform/engine-build:26.07 .
# The base must stay the TensorRT release of triton.image (components/versions.py): a plan loads only there.
ARG TENSORRT_IMAGE=nvcr.io/nvidia/tensorrt:26.07-py3
FROM ${TENSORRT_IMAGE}
COPY model_pipeline/requirements-engine.txt /tmp/requirements-engine.txt
RUN python3 -m pip install --no-cache-dir --disable-pip-version-check -r /tmp/requirements-engine.txt \
    && rm /tmp/requirements-engine.txt
USER 10001:10001
