# Ride-duration prediction service.
#
#   docker build -t ride-duration .                      # the service (last stage, "runtime")
#   docker build --target train -t ride-duration-train . # mlflow server + train.py, for compose
#   docker build --target stream -t ride-duration-stream . # Kafka consumer (python -m ride_duration stream)
#   docker build --target lambda -t ride-duration-lambda . # AWS Lambda container image (Kinesis handler)
#
# The base is pinned by digest (the multi-platform index of python:3.11-slim), so a rebuild gets
# the same bytes until someone moves the pin on purpose. To update it (docs/security.md):
#   docker buildx imagetools inspect python:3.11-slim    # the "Digest:" line of the index
# then replace the sha256 below, rebuild and run `make container-test`. The pin below is the
# 2026-08-05 build (Python 3.11.15 on Debian trixie), as recorded in docker-library/repo-info
# (repos/python/remote/3.11-slim.md). Override for a one-off build:
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim@sha256:<digest> .
# Stages: base -> pipenv (build tool only) -> venv -> deps / train-deps / stream-deps / lambda-deps
# (locked venvs) -> train, stream, lambda, runtime.
# pipenv never reaches a shipped stage; only /opt/venv is copied out of the builders.
ARG PYTHON_IMAGE=python:3.11-slim@sha256:90744cff8f32887f075c47d747a173ff333e9e98801667af93c357fa9f5e28ff

# ---- base: shared by every stage ---------------------------------------------------------------
# checkov:skip=CKV_DOCKER_7: the base is pinned by digest, via ARG PYTHON_IMAGE above (checkov does not expand ARGs)
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LANG=C.UTF-8
# Fixed numeric UID/GID so k8s runAsUser and volume ownership can rely on it.
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin app

# ---- pipenv: the build tool, in its own venv ------------------------------------------------------
FROM base AS pipenv
ARG PIPENV_VERSION=2026.10.3
RUN python -m venv /opt/pipenv \
 && /opt/pipenv/bin/pip install "pipenv==${PIPENV_VERSION}"
WORKDIR /build
# Only the lock inputs: a code change never invalidates the dependency layers below.
COPY Pipfile Pipfile.lock ./
# pipenv installs into the activated venv named by VIRTUAL_ENV (here /opt/venv). No
# `RUN --mount=type=cache` here: the classic builder (used where buildx is missing) rejects it;
# CI caches these layers with BuildKit's GitHub Actions cache instead (.github/workflows/ci.yml).
ENV VIRTUAL_ENV=/opt/venv \
    PIPENV_VERBOSITY=-1 \
    PIPENV_NOSPIN=1

# ---- venv: the runtime packages; --deploy fails the build when Pipfile.lock is stale ------------
FROM pipenv AS venv
RUN python -m venv /opt/venv \
 && /opt/pipenv/bin/pipenv install --deploy

# ---- deps: the runtime venv, minus what the service never runs: pip/setuptools, and the bundled
# test suites of the numeric stack (~65 MB of the ~400 MB venv; nothing imports them).
FROM venv AS deps
RUN /opt/venv/bin/python -m pip uninstall --yes pip setuptools \
 && find /opt/venv/lib/python3*/site-packages -depth -type d -name tests \
      -regex '.*/site-packages/\(numpy\|scipy\|sklearn\|pandas\|pyarrow\)/.*' -exec rm -rf {} +
# Byte-code only for what the service loads: pip compiled every module (~78 MB of .pyc), the
# service imports about half. Drop it all and let one import of the service's dependencies
# (bundled and registry paths) write the .pyc they need; anything missed still imports, compiled
# in memory. No app code here, so a code change does not rebuild this layer.
RUN find /opt/venv -type d -name __pycache__ -prune -exec rm -rf {} + \
 && env -u PYTHONDONTWRITEBYTECODE /opt/venv/bin/python -c "import flask, gunicorn.app.wsgiapp, \
gunicorn.arbiter, gunicorn.workers.sync, gunicorn.workers.ggevent, gunicorn.glogging, gevent.monkey, \
gevent.server, gevent.pool, gevent.threadpool, gevent.resolver.thread, numpy, scipy.sparse, \
sklearn.feature_extraction, sklearn.linear_model, sklearn.pipeline, sklearn.preprocessing, \
pydantic, pydantic_settings, orjson, prometheus_client, prometheus_client.multiprocess, \
pythonjsonlogger.json, swagger_ui_bundle, yaml, mlflow, mlflow.artifacts, mlflow.exceptions"

# ---- train-deps: + the "train" category (full mlflow with its server, pandas, pyarrow) -----------
# Built on the runtime venv, so the shared packages are installed once.
FROM venv AS train-deps
RUN /opt/pipenv/bin/pipenv install --deploy --categories "packages train" \
 && /opt/venv/bin/python -m pip uninstall --yes pip setuptools \
 && find /opt/venv/lib/python3*/site-packages -depth -type d -name tests \
      -regex '.*/site-packages/\(numpy\|scipy\|sklearn\|pandas\|pyarrow\)/.*' -exec rm -rf {} +

# ---- train: `mlflow server` and `python train.py` (docker-compose.yml uses it for both) ------------
FROM base AS train
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    GIT_PYTHON_REFRESH=quiet \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
WORKDIR /app
# /mlflow: sqlite store + artifacts; /reports: retrain's monitor reports. A fresh named volume mounted
# on either inherits this ownership.
RUN install -d -o 10001 -g 10001 -m 0750 /mlflow /reports
COPY --from=train-deps /opt/venv /opt/venv
COPY train.py ./
COPY ride_duration/ ./ride_duration/
RUN python -m compileall -q /app
USER 10001:10001
EXPOSE 5000
CMD ["python", "train.py", "--help"]

# ---- stream-deps / lambda-deps: the runtime venv + confluent-kafka / + boto3 and awslambdaric ---------
# Separate images, so the service image carries neither (both would exceed its size budget).
FROM venv AS stream-deps
RUN /opt/pipenv/bin/pipenv install --deploy --categories "packages stream" \
 && /opt/venv/bin/python -m pip uninstall --yes pip setuptools \
 && find /opt/venv/lib/python3*/site-packages -depth -type d -name tests \
      -regex '.*/site-packages/\(numpy\|scipy\|sklearn\)/.*' -exec rm -rf {} +

FROM venv AS lambda-deps
RUN /opt/pipenv/bin/pipenv install --deploy --categories "packages lambda" \
 && /opt/venv/bin/python -m pip uninstall --yes pip setuptools \
 && find /opt/venv/lib/python3*/site-packages -depth -type d -name tests \
      -regex '.*/site-packages/\(numpy\|scipy\|sklearn\)/.*' -exec rm -rf {} +

# ---- stream: the Kafka consumer. Arguments after the image name go to `python -m ride_duration stream`
#   docker run ride-duration-stream --source kafka://kafka:9092/rides --sink kafka://kafka:9092/ride-predictions \
#     --dead-letter kafka://kafka:9092/rides-dead-letter
FROM base AS stream
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    STREAM_METRICS_PORT=9102
WORKDIR /app
COPY --from=stream-deps /opt/venv /opt/venv
COPY model/ ./model/
COPY ride_duration/ ./ride_duration/
RUN python -m compileall -q /app
USER 10001:10001
EXPOSE 9102
# Alive = the metrics server answers (it runs in the consumer process).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/metrics' % os.environ.get('STREAM_METRICS_PORT', '9102'), timeout=4)"]
# The consumer is PID 1 (exec form): SIGTERM finishes the batch, commits, exits 0.
ENTRYPOINT ["python", "-m", "ride_duration", "stream"]
CMD ["--help"]

# ---- lambda: the Kinesis handler as an AWS Lambda container image (runtime interface client) -----
#   PREDICTIONS_STREAM_NAME (required), DEAD_LETTER_STREAM_NAME, MLFLOW_TRACKING_URI/MODEL_URI or the
#   bundled model. Locally: run it behind the Lambda Runtime Interface Emulator (docs/streaming.md).
FROM base AS lambda
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY --from=lambda-deps /opt/venv /opt/venv
COPY model/ ./model/
COPY ride_duration/ ./ride_duration/
RUN python -m compileall -q /app
USER 10001:10001
# Lambda invokes it; no port, no HEALTHCHECK (the Lambda service supervises it).
HEALTHCHECK NONE
ENTRYPOINT ["python", "-m", "awslambdaric"]
CMD ["ride_duration.stream.kinesis_lambda.lambda_handler"]

# ---- runtime: the service. Last stage, so a plain `docker build .` produces it --------------------
FROM base AS runtime
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PORT=9696 \
    PROMETHEUS_MULTIPROC_DIR=/run/prometheus
WORKDIR /app
# The metrics dir must be writable by the app user; with --read-only mount a tmpfs over it.
RUN install -d -o 10001 -g 10001 -m 0700 /run/prometheus
COPY --from=deps /opt/venv /opt/venv
# Least to most frequently changed: server config, bundled model, then code.
COPY gunicorn.conf.py ./
COPY model/ ./model/
COPY predict.py ./
COPY ride_duration/ ./ride_duration/
# Byte-compile at build time: PYTHONDONTWRITEBYTECODE only stops writes at run time, and the root
# filesystem may be read-only then. (pip already compiled the venv.)
RUN python -m compileall -q /app
USER 10001:10001
EXPOSE 9696
# No curl in the image: probe /ready (200 once a model is loaded) with the stdlib.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/ready' % os.environ.get('PORT', '9696'), timeout=4)"]
# gunicorn is PID 1 (exec form): it gets SIGTERM and stops gracefully (graceful_timeout 30 s).
CMD ["gunicorn", "--config", "gunicorn.conf.py"]
