# syntax=docker/dockerfile:1
# vk-fargate: the provider image (`vk-fargate run`). Build: docker build -t vk-fargate .
# Runs as uid 10001 on a read-only root filesystem: it writes only to /tmp (an emptyDir
# in the Helm chart), where HOME and the XDG folders point.
ARG PYTHON_IMAGE=python:3.11-slim

# 1. Wheels of the dependencies at the versions and hashes of requirements.lock (what
#    the tests ran against), and a wheel of the package.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY requirements.lock ./
RUN pip wheel --require-hashes --wheel-dir /wheels -r requirements.lock
COPY pyproject.toml README.md ./
COPY vk_fargate ./vk_fargate
RUN pip wheel --no-deps --wheel-dir /wheels .

# 2. A virtual environment with only those wheels (nothing fetched), compiled ahead of
#    time so nothing is written at run time.
FROM ${PYTHON_IMAGE}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    XDG_CONFIG_HOME=/tmp/.config \
    XDG_STATE_HOME=/tmp/.local/state \
    XDG_DATA_HOME=/tmp/.local/share \
    PATH=/opt/vk-fargate/bin:$PATH
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv --without-pip /opt/vk-fargate \
    && pip --python /opt/vk-fargate/bin/python install --no-index --find-links /wheels --compile /wheels/vk_fargate-*.whl \
    && groupadd --system --gid 10001 vk-fargate \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin vk-fargate \
    && vk-fargate --help >/dev/null
USER 10001:10001
WORKDIR /tmp
# The kubelet API (logs, pods, /healthz) and the admission webhooks.
EXPOSE 10250 9443
ENTRYPOINT ["vk-fargate"]
CMD ["run"]
