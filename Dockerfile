# syntax=docker/dockerfile:1
# The sidecar image: a virtualenv built in one stage, copied into a clean slim stage.
# Base pinned by digest; the digest is the one published for this tag (see README, "Images").
ARG PYTHON_IMAGE=python:3.12-slim-bookworm@sha256:782412e85d0f0984994c290652577d4018aff08145c85b262bb63dc0c7522254

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sidecar ./sidecar
RUN /opt/venv/bin/pip install --no-cache-dir . \
    && /opt/venv/bin/python -m compileall -q /opt/venv

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/venv /opt/venv
# Numeric, so the kubelet can verify runAsNonRoot; the root filesystem may be read-only:
# nothing is written outside the output folder.
USER 10101:10101
EXPOSE 8081
ENTRYPOINT ["podlister-sidecar"]
