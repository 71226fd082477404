# syntax=docker/dockerfile:1
# The training image used by the Azure ML command job (`intelwatt retrain`) and for `intelwatt
# train`: torch CPU from PyTorch's CPU wheel index (a bare `torch` would pull the ≈ 5 GB CUDA
# stack, library-notes.md §5.1), Stable-Baselines3, gymnasium, ONNX export. No Qt.
#
#   docker build -f packaging/docker/training.Dockerfile \
#       --build-arg VERSION="$(python3 packaging/version_info.py)" -t intelwatt-training .
#   docker run --rm -v "$PWD/runs:/runs" intelwatt-training train --process ro --out /runs/ro

FROM python:3.11-slim
ARG VERSION
ARG TORCH_VERSION=2.13.0
LABEL org.opencontainers.image.title="intelwatt-training" \
      org.opencontainers.image.description="intelwatt agent training and continuous retraining (CPU)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/intelwatt/intelwatt-console"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OMP_NUM_THREADS=1
WORKDIR /opt/intelwatt
# torch first, from the CPU index, so that the training extra's torch pin is already satisfied.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"
COPY pyproject.toml README.md ./
COPY app ./app
COPY resources/scenarios ./resources/scenarios
COPY resources/sites ./resources/sites
COPY resources/trust ./resources/trust
# The project itself: its dependency ranges and the torch pin live in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[training]" \
    && python -c "import torch, sys; sys.exit('CUDA build of torch installed' if torch.version.cuda else 0)" \
    && python -c "import importlib.util as u, sys; sys.exit('PySide6 must not be installed' if u.find_spec('PySide6') else 0)" \
    && groupadd --system --gid 10001 intelwatt \
    && useradd --system --uid 10001 --gid intelwatt --home-dir /opt/intelwatt --shell /usr/sbin/nologin intelwatt
# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001
ENTRYPOINT ["intelwatt"]
CMD ["retrain", "--help"]
