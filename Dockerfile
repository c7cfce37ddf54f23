# trm-serve inference image: CUDA runtime + CUDA torch + this package; runs `trm serve`.
#
#   docker build -t trm-serve .
#   docker run --gpus all -p 8000:8000 -v $PWD/models:/models:ro \
#       -e TRM_MODELS=/models/sudoku.safetensors trm-serve
#
# Without TRM_MODELS the checkpoints bundled in trm_core/pretrained are served. Every setting is a
# TRM_* environment variable (`docker run trm-serve --help` lists them).
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
FROM ${CUDA_IMAGE}

# torch wheels bring their own CUDA libraries; the index must match the base image's CUDA major.minor.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv curl ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

# The CUDA build of torch first, in its own layer: it is the big one and changes least often.
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY trm_core ./trm_core
COPY service ./service
COPY trm_cli ./trm_cli
COPY training ./training
# training/: ARC adaptation jobs (service/tasks/adapt.py) train with it.
# pyproject's torch requirement is a range, so the CUDA build installed above is kept.
RUN pip install . && python -c "import service.api.app, trm_core" && trm --help > /dev/null

RUN useradd --uid 10001 --create-home trm
USER 10001

ENV TRM_HOST=0.0.0.0 \
    TRM_PORT=8000 \
    TRM_DEVICE=auto \
    TRM_DRAIN_TIMEOUT_S=30
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s \
    CMD curl -fsS http://127.0.0.1:8000/healthz || exit 1
# SIGTERM -> uvicorn stops accepting, in-flight requests finish (drain), workers stop.
STOPSIGNAL SIGTERM
ENTRYPOINT ["trm", "serve"]
