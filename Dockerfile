# trm-serve inference image: Debian + Python + CUDA torch (from pip) + this package; runs `trm serve`.
#
#   docker build -t trm-serve .
#   docker run --gpus all -p 8000:8000 -v $PWD/models:/models:ro \
#       -e TRM_MODELS=/models/sudoku.safetensors trm-serve
#
# Without TRM_MODELS the checkpoints bundled in trm_core/pretrained are served. Every setting is a
# TRM_* environment variable (`docker run trm-serve --help` lists them). `deploy/smoke.py` builds
# this image and runs it as below, with Prometheus, on every CI run (deploy/README.md has its figures).
#
# Why a plain Debian base and not nvidia/cuda:*-cudnn-runtime: the torch CUDA wheels bring every
# CUDA library they load as pip packages (nvidia-cublas, -cudnn, -cufft, -cusparse, -nccl, ... in
# site-packages/nvidia, found through torch's RPATH, not through the system's library path), so a
# cuDNN runtime base ships the same libraries a second time, several GB that nothing loads. The one
# thing the wheels do not bring is the driver (libcuda.so), and the NVIDIA container runtime mounts
# it from the host into any image when NVIDIA_VISIBLE_DEVICES / NVIDIA_DRIVER_CAPABILITIES ask for it
# (set below, as the nvidia/cuda images do). deploy/README.md has the measured sizes.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

# The torch build and where pip finds it: the CUDA 12.8 wheels by default; an empty TORCH_INDEX
# takes torch from pip's configured index (e.g. a CPU wheel, as deploy/smoke.py does).
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
# pip's own settings, for builds behind a private index, a proxy or a TLS-inspecting CA (pass the CA
# bundle in the base image; deploy/base_image.py does). Unset: pip's defaults. Build-time only.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_CERT
ARG PIP_TRUSTED_HOST

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv curl ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

# torch first, in its own layer: it is the big one and changes least often.
RUN pip install "torch==${TORCH_VERSION}" ${TORCH_INDEX:+--index-url "$TORCH_INDEX"}

WORKDIR /app
COPY pyproject.toml README.md ./
COPY trm_core ./trm_core
COPY service ./service
COPY trm_cli ./trm_cli
COPY training ./training
# training/: ARC adaptation jobs (service/tasks/adapt.py) train with it.
# pyproject's torch requirement is a range, so the torch installed above is kept.
RUN pip install . && python -c "import service.api.app, trm_core" && trm --help > /dev/null

# HOME and every cache a library may write (torch.compile / Triton / CUDA JIT) live under /home/trm;
# Kubernetes (read-only root filesystem) mounts a writable volume there (deploy/k8s/deployment.yaml).
RUN useradd --uid 10001 --create-home --home-dir /home/trm trm
USER 10001
ENV HOME=/home/trm \
    XDG_CACHE_HOME=/home/trm/.cache \
    TORCHINDUCTOR_CACHE_DIR=/home/trm/.cache/torchinductor \
    TRITON_CACHE_DIR=/home/trm/.cache/triton \
    CUDA_CACHE_PATH=/home/trm/.cache/nv

# Drain budget: `docker stop` gives 10 s by default before SIGKILL; the process exits within
# TRM_DRAIN_TIMEOUT_S of SIGTERM (TRM_PRESTOP_S of 503s included), so 8 s leaves 2 s of margin.
# Compose and Kubernetes set longer ones together with a longer grace period; under plain Docker
# raise both: `docker run --stop-timeout 40 -e TRM_DRAIN_TIMEOUT_S=30 ...`.
ENV TRM_HOST=0.0.0.0 \
    TRM_PORT=8000 \
    TRM_DEVICE=auto \
    TRM_PRESTOP_S=1 \
    TRM_DRAIN_TIMEOUT_S=8
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s \
    CMD curl -fsS "http://127.0.0.1:${TRM_PORT}/healthz" || exit 1
# SIGTERM -> readiness off and new requests 503, in-flight requests finish (drain), then exit 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["trm", "serve"]
