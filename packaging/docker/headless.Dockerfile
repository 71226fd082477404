# syntax=docker/dockerfile:1
# The on-prem agent: `intelwatt headless` (the control core without a UI). No Qt, no torch: the base
# package only (library-notes.md §6.5). Build from the repository root:
#
#   docker build -f packaging/docker/headless.Dockerfile \
#       --build-arg VERSION="$(python3 packaging/version_info.py)" -t intelwatt-headless .
#   docker run -d --name intelwatt -v /srv/intelwatt/site.toml:/etc/intelwatt/site.toml:ro \
#       -v intelwatt-data:/var/lib/intelwatt intelwatt-headless

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ARG VERSION
LABEL org.opencontainers.image.title="intelwatt-headless" \
      org.opencontainers.image.description="intelwatt control core without a UI (on-prem agent)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/intelwatt/intelwatt-console"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    INTELWATT_DATA_DIR=/var/lib/intelwatt
COPY --from=build /wheels /wheels
# The base package without the gui and training extras: no PySide6, no torch.
RUN pip install --no-cache-dir /wheels/*.whl \
    && rm -rf /wheels \
    && python -c "import importlib.util as u, sys; sys.exit([m for m in ('PySide6', 'torch', 'gymnasium') if u.find_spec(m)])" \
    && groupadd --system --gid 10001 intelwatt \
    && useradd --system --uid 10001 --gid intelwatt --home-dir /var/lib/intelwatt --shell /usr/sbin/nologin intelwatt \
    && install -d -o intelwatt -g intelwatt -m 0750 /var/lib/intelwatt /var/log/intelwatt
# Agents and trusted keys; the demo site's relative paths resolve from this working directory.
# Mount the site's own file over /etc/intelwatt/site.toml (and its own trust store if it has one).
WORKDIR /opt/intelwatt
COPY resources/agents ./resources/agents
COPY resources/trust ./resources/trust
COPY resources/sites/demo-ro.toml /etc/intelwatt/site.toml
# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001
VOLUME ["/var/lib/intelwatt"]
EXPOSE 8765
# GET /status is served on loopback inside the container; healthy means PLC connected and the
# core's own checks passing (the heartbeat to the PLC is written only then).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import json, sys, urllib.request; s = json.load(urllib.request.urlopen('http://127.0.0.1:8765/status', timeout=4)); sys.exit(0 if s.get('healthy') else 1)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["intelwatt", "--log-dir", "/var/log/intelwatt"]
CMD ["headless", "--site", "/etc/intelwatt/site.toml", "--status-port", "8765", "--data-dir", "/var/lib/intelwatt"]
