# syntax=docker/dockerfile:1
# The sidecar image: dependencies from a hash-locked set (requirements/*.lock), built in one
# stage, and a runtime stage that holds the virtualenv and nothing to build with.
#
# PYTHON_IMAGE: any image with python3 (>= 3.11) and its venv module with ensurepip (for the
# build stage): the official python image (pinned by digest, see README "Images"), or a
# Debian base with python3 and python3-venv (what CI builds with mmdebstrap).
ARG PYTHON_IMAGE=python:3.12-slim-bookworm@sha256:782412e85d0f0984994c290652577d4018aff08145c85b262bb63dc0c7522254

FROM ${PYTHON_IMAGE} AS build
# Set by a reproducible build (tox -e release): bytecode is then hash-checked, with no
# build-time dates in it (py_compile and pip honour it).
ARG SOURCE_DATE_EPOCH
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# /opt/tools: pip and the build backend, used here only. /opt/venv: what ships, without pip.
RUN python3 -m venv /opt/tools && python3 -m venv --without-pip /opt/venv
WORKDIR /src
COPY requirements/build.lock requirements/runtime.lock requirements/
# Behind a TLS-intercepting proxy, pass the host's CA bundle and pip configuration as build
# secrets (--secret id=ca,src=... --secret id=pipconf,src=...): they are mounted for this
# step only and are in no layer. Every file pip installs must match a hash in the lock.
RUN --mount=type=secret,id=ca,required=false \
    --mount=type=secret,id=pipconf,required=false \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi; \
    if [ -s /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi; \
    /opt/tools/bin/pip install --require-hashes --no-deps -r requirements/build.lock \
    && /opt/tools/bin/pip --python /opt/venv/bin/python install \
        --require-hashes --no-deps -r requirements/runtime.lock
COPY pyproject.toml README.md ./
COPY sidecar ./sidecar
# The project itself: built by the locked backend, offline, without its dependencies
# (installed above from the lock).
RUN /opt/tools/bin/pip wheel --no-deps --no-build-isolation --no-index -w /tmp/dist . \
    && /opt/tools/bin/pip --python /opt/venv/bin/python install --no-deps --no-index /tmp/dist/*.whl \
    && /opt/venv/bin/python -m compileall -q /opt/venv

FROM ${PYTHON_IMAGE}
# Nothing to build or install with at run time: the base's own pip, setuptools and wheel
# go too (the official image has them; a Debian base has none of them).
RUN rm -rf /usr/local/bin/pip* /usr/local/lib/python3*/site-packages/pip* \
    /usr/local/lib/python3*/site-packages/setuptools* /usr/local/lib/python3*/site-packages/wheel* \
    /usr/local/lib/python3*/ensurepip /usr/lib/python3*/ensurepip
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Numeric, so the kubelet can verify runAsNonRoot; the root filesystem may be read-only:
# nothing is written outside the output folder.
USER 10101:10101
EXPOSE 8081
ENTRYPOINT ["podlister-sidecar"]
