#!/usr/bin/env bash
# container-test.sh: build the real Dockerfile, run the image and probe it, then run the whole
# docker compose stack (mlflow + train + predict) and check predict serves the registry's model.
#
#   bash scripts/container-test.sh          (make container-test)
#
# It works on a bare Debian machine with no container registry (this project's sandbox):
#   - installs docker.io / docker-compose / debootstrap with apt when missing (root or sudo),
#   - starts its own dockerd (host networking only) when none answers, and stops only that one,
#   - when the Dockerfile's base (python:3.11-slim@sha256:...) is missing and cannot be pulled, builds a
#     stand-in: Debian bookworm's Python 3.11 via debootstrap, trusting the host's extra CA certs
#     (for TLS-inspecting proxies), imported under the tag without the digest (a local import has
#     no registry digest); docker build and compose (an override file in $WORK) get
#     PYTHON_IMAGE=<that tag>. The Dockerfile and the compose files are unchanged.
# On a normal machine (e.g. GitHub Actions) it uses the running daemon and the real base image.
#
# Checks: /ready 200 with the bundled model; the reference ride gives a finite positive duration
# equal to what the service computes in-process; PID 1 runs as UID 10001; the image HEALTHCHECK
# turns healthy; the image serves with --read-only (+ tmpfs for /tmp and the metrics dir); image
# size within budget. Compose: train registers + promotes, predict /ready shows source registry
# and the version the production alias points to. Publish: a `docker-registry` (Debian's Docker
# Distribution, the Docker Hub API) on a loopback port; scripts/publish.sh pushes the tested image
# to it, the local image is removed, pulled back BY DIGEST, run, and must give the reference ride.
# The image that passed is recorded in $TESTED_FILE for `make publish` (no rebuild). Always tears
# down; prints stage timings.
#
# Env knobs:
#   IMAGE=ride-duration:test   image tag to build/test     BUILD_IMAGE=1 (0: test IMAGE as is)
#   RUN_COMPOSE=1              0 skips the compose stage    PORT=9696, MLFLOW_PORT=5000
#   SIZE_BUDGET_MB=320         budget for the layers the Dockerfile adds on top of the base image
#   TLC_DATA_DIR=../shared/data  local parquet folder for training (else the TLC files download)
#   WORK=/tmp/ride-duration-container-test   REBUILD_BASE=0 (1: rebuild the stand-in base)
#   PROJECT_DIR=<repo root>   (default: this script's parent directory)
#   RUN_REGISTRY=1             0 skips the loopback registry round trip (stage 9)
#   TESTED_FILE=reports/tested-image   where the tested image ID is recorded for scripts/publish.sh
set -euo pipefail

ROOT=${PROJECT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
cd "$ROOT"
IMAGE=${IMAGE:-ride-duration:test}
BUILD_IMAGE=${BUILD_IMAGE:-1}
RUN_COMPOSE=${RUN_COMPOSE:-1}
PORT=${PORT:-9696}
MLFLOW_PORT=${MLFLOW_PORT:-5000}
WORK=${WORK:-/tmp/ride-duration-container-test}
REBUILD_BASE=${REBUILD_BASE:-0}
TLC_DATA_DIR=${TLC_DATA_DIR:-$ROOT/../shared/data}
RUN_REGISTRY=${RUN_REGISTRY:-1}
TESTED_FILE=${TESTED_FILE:-$ROOT/reports/tested-image}
# Size budget, on what the Dockerfile adds (total minus the base image): the base here may be
# the debootstrap stand-in (144 MB), not python:3.11-slim (~125 MB), so a total would measure
# the stand-in. Measured: 294 MB added = the locked runtime venv (scipy+numpy+sklearn ~225 MB,
# mlflow-skinny and its deps, .pyc only for the modules the service imports) plus code and
# model. Then 311 MB (2026-12-06): skops + prettytable + wcwidth (~8 MB, the registry's safe
# model format, docs/security.md) and the monotone bundle (0.8 MB). 320 MB keeps ~9 MB headroom
# and the total on the official base (~125 + 320 = 445 MB) under the 450 MB goal.
SIZE_BUDGET_MB=${SIZE_BUDGET_MB:-320}
MODEL_NAME=${MODEL_NAME:-nyc-taxi-ride-duration}
CNAME=ride-duration-ctest
PROJECT=ride-duration-ctest
REF_RIDE='{"PULocationID": 10, "DOLocationID": 50, "trip_distance": 40}'
mkdir -p "$WORK"

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

T0=$(date +%s.%N); TSTART=$T0; TIMINGS=()
lap() {
  local now; now=$(date +%s.%N)
  TIMINGS+=("$(printf '%-34s %7.1f s' "$1" "$(python3 -c "print($now - $T0)")")"); T0=$now
}
log() { printf '\n=== %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

DOCKERD_PID=""
REGISTRY_PID=""
COMPOSE=()
COMPOSE_FILES=()
cleanup() {
  local rc=$?
  set +e
  if docker info >/dev/null 2>&1; then
    if [ $rc -ne 0 ]; then
      for c in "$CNAME" "$CNAME-ro"; do
        docker inspect "$c" >/dev/null 2>&1 && { log "logs: $c"; docker logs --tail 80 "$c" 2>&1; }
      done
      if [ ${#COMPOSE[@]} -gt 0 ]; then
        log "logs: compose"; "${COMPOSE[@]}" "${COMPOSE_FILES[@]}" -p "$PROJECT" logs --no-color --tail 80 2>&1
      fi
    fi
    docker rm -f "$CNAME" "$CNAME-ro" "$CNAME-pulled" >/dev/null 2>&1
    if [ ${#COMPOSE[@]} -gt 0 ]; then
      "${COMPOSE[@]}" "${COMPOSE_FILES[@]}" -p "$PROJECT" down -v --remove-orphans >/dev/null 2>&1
    fi
  fi
  if [ -n "$REGISTRY_PID" ]; then           # the loopback registry of stage 9
    kill -TERM "$REGISTRY_PID" 2>/dev/null; wait "$REGISTRY_PID" 2>/dev/null
    rm -rf "$WORK/registry-data"
  fi
  if [ -n "$DOCKERD_PID" ]; then            # stop only the daemon this script started
    $SUDO kill -TERM "$DOCKERD_PID" 2>/dev/null
    for _ in $(seq 1 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
    mountpoint -q /run/docker/netns/default 2>/dev/null && $SUDO umount /run/docker/netns/default
  fi
  if [ ${#TIMINGS[@]} -gt 0 ]; then
    log "stage timings"; printf '%s\n' "${TIMINGS[@]}"
    printf '%-34s %7.1f s\n' "total" "$(python3 -c "print($(date +%s.%N) - $TSTART)")"
  fi
  [ $rc -eq 0 ] && echo "container-test: OK" || echo "container-test: FAILED (rc=$rc)"
  exit $rc
}
trap cleanup EXIT

# http METHOD URL [BODY] -> prints "<status> <body>" (stdlib only; no curl needed)
http() {
  python3 - "$@" <<'PY'
import sys, urllib.request, urllib.error
method, url = sys.argv[1], sys.argv[2]
data = sys.argv[3].encode() if len(sys.argv) > 3 else None
req = urllib.request.Request(url, data=data, method=method,
                             headers={"Content-Type": "application/json"} if data else {})
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
except Exception as e:  # connection refused etc.
    print(0, repr(e))
PY
}
# wait_http URL SECONDS [CONTAINER]: until GET URL answers 200 (fails early if CONTAINER exits)
wait_http() {
  local url=$1 limit=$2 ctr=${3:-} deadline
  deadline=$(( $(date +%s) + limit ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    [ "$(http GET "$url" | cut -d' ' -f1)" = 200 ] && return 0
    if [ -n "$ctr" ] && [ "$(docker inspect -f '{{.State.Running}}' "$ctr" 2>/dev/null)" != true ]; then
      fail "$ctr exited while waiting for $url"
    fi
    sleep 0.5
  done
  fail "no 200 from $url within ${limit}s"
}
json_get() {  # json_get 'JSON' key -> value (python repr for non-strings)
  python3 -c 'import json,sys; v=json.loads(sys.argv[1]).get(sys.argv[2]); print(v if v is not None else "")' "$1" "$2"
}
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# --- 1. tools -------------------------------------------------------------------------------------
log "1. tools"
PKGS=()
command -v docker >/dev/null || PKGS+=(docker.io)
docker info >/dev/null 2>&1 || command -v dockerd >/dev/null || PKGS+=(docker.io)
if [ "$RUN_COMPOSE" = 1 ] && ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then
  PKGS+=(docker-compose)
fi
if [ ${#PKGS[@]} -gt 0 ]; then
  echo "apt-get install ${PKGS[*]}"
  $SUDO apt-get update -q >/dev/null
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PKGS[@]}" >/dev/null
fi
echo "docker client: $(command -v docker) $(docker version -f '{{.Client.Version}}' 2>/dev/null || true)"
lap "tools (apt)"

# --- 2. daemon ------------------------------------------------------------------------------------
log "2. docker daemon"
if docker info >/dev/null 2>&1; then
  echo "using the running daemon ($(docker version -f '{{.Server.Version}}'))"
else
  echo "starting dockerd (host networking only: --bridge=none --iptables=false)"
  $SUDO dockerd --iptables=false --ip-forward=false --bridge=none </dev/null >"$WORK/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  for _ in $(seq 1 120); do docker info >/dev/null 2>&1 && break; sleep 0.25; done
  docker info >/dev/null 2>&1 || { tail -30 "$WORK/dockerd.log"; fail "dockerd did not come up"; }
  echo "dockerd pid $DOCKERD_PID, server $(docker version -f '{{.Server.Version}}')"
fi
# No bridge network (dockerd --bridge=none): containers and builds use the host's network.
if docker network inspect bridge >/dev/null 2>&1; then HOSTNET=0; else HOSTNET=1; fi
# No buildx plugin: the classic builder (it prints a deprecation notice). BuildKit otherwise.
if docker buildx version >/dev/null 2>&1; then export DOCKER_BUILDKIT=1; else export DOCKER_BUILDKIT=0; fi
echo "host networking: $HOSTNET; DOCKER_BUILDKIT=$DOCKER_BUILDKIT"
lap "docker daemon"

# --- 3. base image --------------------------------------------------------------------------------
BASE=$(sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile | head -1)
[ -n "$BASE" ] || fail "no ARG PYTHON_IMAGE=... in Dockerfile"
BASE_TAG=${BASE%@*}   # python:3.11-slim: what a stand-in can be tagged (an import has no digest)
BUILD_ARGS=(); COMPOSE_STANDIN=""
log "3. base image $BASE"
build_standin() {
  command -v debootstrap >/dev/null || {
    $SUDO apt-get update -q >/dev/null
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null
  }
  local mirror rootfs=$WORK/rootfs
  mirror=${DEBIAN_MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
  mirror=${mirror:-http://deb.debian.org/debian}
  $SUDO rm -rf "$rootfs"
  echo "debootstrap bookworm from $mirror"
  $SUDO debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
    bookworm "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 || { tail -30 "$WORK/debootstrap.log"; fail "debootstrap"; }
  # A TLS-inspecting proxy's CA must be trusted inside the image for pip to reach PyPI.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    $SUDO cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
    $SUDO chroot "$rootfs" update-ca-certificates >/dev/null 2>&1
  fi
  $SUDO ln -sf python3 "$rootfs/usr/bin/python"                  # python:3.11-slim has `python`
  $SUDO rm -f "$rootfs"/usr/lib/python3.*/EXTERNALLY-MANAGED       # like the official image
  $SUDO chroot "$rootfs" apt-get clean
  $SUDO rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
    "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
  $SUDO sh -c ": > '$rootfs/etc/resolv.conf'"
  $SUDO tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$BASE_TAG" >/dev/null
  $SUDO rm -rf "$rootfs"
  echo "stand-in $BASE_TAG: Debian bookworm $(docker run --rm --network host "$BASE_TAG" python3 -V 2>/dev/null)"
}
if [ "$REBUILD_BASE" != 1 ] && docker image inspect "$BASE" >/dev/null 2>&1; then
  echo "$BASE is in the local image store"
elif [ "$REBUILD_BASE" != 1 ] && timeout 120 docker pull -q "$BASE" >/dev/null 2>&1; then
  echo "pulled $BASE"
else
  # The stand-in carries the tag only, so every build (docker build, compose) is pointed at it.
  if [ "$REBUILD_BASE" != 1 ] && [ "$BASE_TAG" != "$BASE" ] && docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
    echo "$BASE cannot be pulled here: using the local $BASE_TAG (a stand-in from an earlier run)"
  else
    [ "$REBUILD_BASE" = 1 ] && echo "REBUILD_BASE=1: building the stand-in" || echo "$BASE cannot be pulled here: building a stand-in"
    build_standin
  fi
  BASE=$BASE_TAG
  BUILD_ARGS=(--build-arg "PYTHON_IMAGE=$BASE_TAG")
  COMPOSE_STANDIN=$WORK/compose.standin-base.yml   # the same for the compose stack's builds
  { echo "services:"; for svc in mlflow train predict; do
      printf '  %s:\n    build:\n      args:\n        PYTHON_IMAGE: "%s"\n' "$svc" "$BASE_TAG"; done; } >"$COMPOSE_STANDIN"
fi
BASE_BYTES=$(docker image inspect -f '{{.Size}}' "$BASE")
lap "base image"

# --- 4. build ------------------------------------------------------------------------------------
if [ "$BUILD_IMAGE" = 1 ]; then
  log "4. docker build -t $IMAGE ."
  NET=(); [ "$HOSTNET" = 1 ] && NET=(--network host)
  docker build "${NET[@]}" "${BUILD_ARGS[@]}" -t "$IMAGE" . >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; fail "docker build"; }
  echo "built $IMAGE ($(grep -c -E '^Step [0-9]+/' "$WORK/build.log" || true) classic-builder steps, $(grep -c 'Using cache' "$WORK/build.log" || true) from cache; log: $WORK/build.log)"
  lap "docker build"
else
  log "4. testing the prebuilt $IMAGE"
  docker image inspect "$IMAGE" >/dev/null || fail "$IMAGE not found"
fi

# --- 5. image size -------------------------------------------------------------------------------
IMG_BYTES=$(docker image inspect -f '{{.Size}}' "$IMAGE")
read -r TOTAL_MB ADDED_MB <<<"$(python3 -c "print(round($IMG_BYTES/1e6), round(($IMG_BYTES-$BASE_BYTES)/1e6))")"
log "5. image size: $TOTAL_MB MB total = base $(( BASE_BYTES / 1000000 )) MB + $ADDED_MB MB added (budget for added: $SIZE_BUDGET_MB MB; goal for the total with the official base: <= 450 MB)"
[ "$ADDED_MB" -le "$SIZE_BUDGET_MB" ] || fail "image adds $ADDED_MB MB > budget $SIZE_BUDGET_MB MB"

# --- 6. run + probe -------------------------------------------------------------------------------
# run_app NAME [extra docker run args...]: listens on 127.0.0.1:$PORT either way.
run_app() {
  local name=$1; shift
  port_free "$PORT" || fail "port $PORT on 127.0.0.1 is already taken"
  if [ "$HOSTNET" = 1 ]; then
    docker run -d --name "$name" --network host -e HOST=127.0.0.1 -e PORT="$PORT" "$@" "${RUN_IMAGE:-$IMAGE}" >/dev/null
  else
    docker run -d --name "$name" -p "127.0.0.1:$PORT:9696" "$@" "${RUN_IMAGE:-$IMAGE}" >/dev/null
  fi
}
BASE_URL="http://127.0.0.1:$PORT"

log "6. docker run $IMAGE"
run_app "$CNAME"
wait_http "$BASE_URL/health" 60 "$CNAME"
lap "run -> /health 200"
wait_http "$BASE_URL/ready" 30 "$CNAME"
read -r code body <<<"$(http GET "$BASE_URL/ready")"
echo "GET /ready -> $code $body"
[ "$(json_get "$body" source)" = bundled ] || fail "expected source bundled without a registry"

read -r code body <<<"$(http POST "$BASE_URL/predict" "$REF_RIDE")"
echo "POST /predict $REF_RIDE -> $code $body"
[ "$code" = 200 ] || fail "/predict answered $code"
# Reference: the same app, in-process (Flask test client), on the host's project env when it has
# one, else inside the image: the HTTP path through gunicorn must give the very same number.
REF_PY='import json, sys
from ride_duration import create_app
c = create_app({"mlflow_tracking_uri": None, "model_poll_seconds": 0}).test_client()
r = c.post("/predict", json=json.loads(sys.argv[1]))
print(r.get_json()["duration"])'
if [ -x "$ROOT/.venv/bin/python" ] && EXPECTED=$(cd "$ROOT" && env -u MLFLOW_TRACKING_URI "$ROOT/.venv/bin/python" -c "$REF_PY" "$REF_RIDE" 2>/dev/null | tail -1); then
  REF_FROM="host .venv (in-process)"
else
  EXPECTED=$(docker run --rm --network none --entrypoint python "$IMAGE" -c "$REF_PY" "$REF_RIDE" 2>/dev/null | tail -1)
  REF_FROM="image (in-process)"
fi
python3 - "$body" "$EXPECTED" "$REF_FROM" <<'PY' || fail "reference ride check"
import json, math, sys, pathlib
body, expected, ref_from = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
d = body["duration"]
assert isinstance(d, float) and math.isfinite(d) and d > 0, f"duration {d!r} is not a finite positive float"
meta = json.loads(pathlib.Path("model/metadata.json").read_text())
assert body["model_version"] == meta["version"], (body["model_version"], meta["version"])
exp = float(expected)
assert abs(d - exp) <= 1e-6 * max(1.0, abs(exp)), f"HTTP {d} != {ref_from} {exp}"
ref = meta.get("reference_prediction") or meta.get("reference", {}).get("duration")
if ref is not None:
    assert abs(d - float(ref)) <= 1e-3, f"{d} != metadata.json reference {ref}"
print(f"reference ride: {d:.4f} min, equal to the {ref_from} value {exp:.4f}; model {body['model_version']}")
PY
read -r code _ <<<"$(http GET "$BASE_URL/metrics")"
echo "GET /metrics -> $code"
[ "$code" = 200 ] || [ "$code" = 404 ] || fail "/metrics answered $code"
[ "$code" = 404 ] && echo "WARN: /metrics not implemented yet (404)"

PID1_UID=$(docker exec "$CNAME" sh -c "awk '/^Uid:/{print \$2}' /proc/1/status")
echo "PID 1 ($(docker exec "$CNAME" cat /proc/1/comm)) runs as UID $PID1_UID; image USER $(docker image inspect -f '{{.Config.User}}' "$IMAGE")"
[ "$PID1_UID" = 10001 ] || fail "PID 1 runs as UID $PID1_UID, not 10001"

echo "waiting for the image HEALTHCHECK"
for _ in $(seq 1 90); do
  HS=$(docker inspect -f '{{.State.Health.Status}}' "$CNAME")
  [ "$HS" = healthy ] && break
  [ "$HS" = unhealthy ] && break
  sleep 1
done
echo "health: $HS"
[ "$HS" = healthy ] || { docker inspect -f '{{json .State.Health}}' "$CNAME"; fail "HEALTHCHECK did not turn healthy"; }
lap "probes + healthcheck"

# Graceful stop: gunicorn handles SIGTERM; docker stop must not need to SIGKILL it.
t=$(date +%s); docker stop -t 35 "$CNAME" >/dev/null; t=$(( $(date +%s) - t ))
EXIT=$(docker inspect -f '{{.State.ExitCode}}' "$CNAME")
echo "docker stop took ${t}s, exit code $EXIT"
[ "$EXIT" = 0 ] || fail "exit code $EXIT after SIGTERM (137 = killed after the grace period)"
docker rm "$CNAME" >/dev/null
lap "graceful stop"

# --- 7. read-only root filesystem -------------------------------------------------------------------
# As the k8s pod runs it: read-only root, emptyDirs (here tmpfs) for /tmp and the metrics dir, no
# capabilities, no privilege escalation, 2 workers.
log "7. docker run --read-only --cap-drop ALL (tmpfs: /tmp, /run/prometheus), like the k8s pod"
run_app "$CNAME-ro" --read-only --tmpfs /tmp --tmpfs /run/prometheus:uid=10001,gid=10001,mode=0700 \
  --cap-drop ALL --security-opt no-new-privileges -e WEB_CONCURRENCY=2
wait_http "$BASE_URL/ready" 60 "$CNAME-ro"
read -r code body <<<"$(http POST "$BASE_URL/predict" "$REF_RIDE")"
echo "read-only: POST /predict -> $code $body"
[ "$code" = 200 ] || fail "read-only container answered $code"
read -r code _ <<<"$(http GET "$BASE_URL/metrics")"
[ "$code" = 200 ] || [ "$code" = 404 ] || fail "read-only /metrics answered $code"
if docker exec "$CNAME-ro" sh -c 'touch /app/probe' 2>/dev/null; then fail "root filesystem is writable"; fi
echo "root filesystem is read-only (touch /app/probe refused)"
docker exec "$CNAME-ro" sleep 0 || fail "no sleep binary for the k8s preStop hook"
docker rm -f "$CNAME-ro" >/dev/null
lap "read-only run"
TESTED_ID=$(docker image inspect -f '{{.Id}}' "$IMAGE")

# --- 8. compose stack -----------------------------------------------------------------------------
if [ "$RUN_COMPOSE" = 1 ]; then
  if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(docker-compose); fi
  COMPOSE_FILES=(-f docker-compose.yml)
  if [ "$HOSTNET" = 1 ]; then COMPOSE_FILES+=(-f docker-compose.hostnet.yml)
  else COMPOSE_FILES+=(-f docker-compose.override.yml); fi
  if [ -f "$TLC_DATA_DIR/green_tripdata_2021-01.parquet" ] && [ -f "$TLC_DATA_DIR/green_tripdata_2021-02.parquet" ]; then
    TLC_DATA_DIR=$(cd "$TLC_DATA_DIR" && pwd); export TLC_DATA_DIR
    COMPOSE_FILES+=(-f docker-compose.data.yml)
    DATA_NOTE="local parquet files in $TLC_DATA_DIR"
  else
    DATA_NOTE="the TLC's public files (download)"
  fi
  [ -z "$COMPOSE_STANDIN" ] || COMPOSE_FILES+=(-f "$COMPOSE_STANDIN")
  log "8. compose: ${COMPOSE[*]} ${COMPOSE_FILES[*]} (training on $DATA_NOTE)"
  port_free "$PORT" || fail "port $PORT is taken"; port_free "$MLFLOW_PORT" || fail "port $MLFLOW_PORT is taken"
  "${COMPOSE[@]}" "${COMPOSE_FILES[@]}" -p "$PROJECT" down -v --remove-orphans >/dev/null 2>&1 || true
  "${COMPOSE[@]}" "${COMPOSE_FILES[@]}" -p "$PROJECT" build 2>&1 | tail -3
  lap "compose build"
  # Blocks until mlflow is healthy and train has completed, then starts predict.
  "${COMPOSE[@]}" "${COMPOSE_FILES[@]}" -p "$PROJECT" up -d
  TRAIN_ID=$("${COMPOSE[@]}" "${COMPOSE_FILES[@]}" -p "$PROJECT" ps -a -q train)
  for _ in $(seq 1 600); do
    [ "$(docker inspect -f '{{.State.Status}}' "$TRAIN_ID")" = exited ] && break; sleep 1
  done
  TRAIN_RC=$(docker inspect -f '{{.State.ExitCode}}' "$TRAIN_ID")
  docker logs "$TRAIN_ID" 2>&1 | tail -5
  [ "$TRAIN_RC" = 0 ] || fail "train exited $TRAIN_RC"
  lap "compose up: mlflow + train"
  # depends_on condition service_completed_successfully: predict must start after train ended.
  PREDICT_ID=$("${COMPOSE[@]}" "${COMPOSE_FILES[@]}" -p "$PROJECT" ps -a -q predict)
  python3 - "$(docker inspect -f '{{.State.FinishedAt}}' "$TRAIN_ID")" \
    "$(docker inspect -f '{{.State.StartedAt}}' "$PREDICT_ID")" <<'PY' || fail "predict started before train finished"
import re, sys
def ns(stamp):  # Docker's RFC 3339 with 0-9 fraction digits -> sortable "HH:MM:SS.nnnnnnnnn"
    date, clock, frac = re.match(r"(\S+)T(\d\d:\d\d:\d\d)(?:\.(\d+))?Z", stamp).groups()
    return f"{date}T{clock}.{(frac or '').ljust(9, '0')}"
finished, started = ns(sys.argv[1]), ns(sys.argv[2])
assert started > finished, f"train finished {finished}, predict started {started}"
print(f"order: train finished {finished[11:23]}, predict started {started[11:23]}")
PY
  ALIAS=$(http GET "http://127.0.0.1:$MLFLOW_PORT/api/2.0/mlflow/registered-models/alias?name=$MODEL_NAME&alias=production")
  read -r REG_VERSION REG_RUN <<<"$(python3 -c '
import json, sys
mv = json.loads(sys.argv[1].split(" ", 1)[1])["model_version"]
print(mv["version"], mv["run_id"])' "$ALIAS")" || fail "no production alias in the registry: $ALIAS"
  echo "registry: $MODEL_NAME@production -> version $REG_VERSION (run $REG_RUN)"
  wait_http "$BASE_URL/ready" 120
  read -r code body <<<"$(http GET "$BASE_URL/ready")"
  echo "predict GET /ready -> $code $body"
  python3 - "$body" "$REG_VERSION" "$REG_RUN" <<'PY' || fail "predict does not serve the registry's production version"
import json, sys
body, version, run_id = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
assert body["source"] == "registry", f"source is {body['source']!r} (fallback: {body.get('fallback_reason')})"
served = str(body["model_version"])
assert served == version or served.endswith(("-v" + version, "/" + version)), \
    f"serving {served!r}, registry production is version {version}"
assert body.get("run_id") == run_id, f"serving run {body.get('run_id')}, registry production is run {run_id}"
print(f"predict serves registry version {version} ({served}, run {run_id})")
PY
  read -r code body <<<"$(http POST "$BASE_URL/predict" "$REF_RIDE")"
  echo "compose: POST /predict -> $code $body"
  [ "$code" = 200 ] || fail "compose predict answered $code"
  lap "compose: predict on the registry"
  # A second training run on the same data is not better: the gate keeps the champion (train.py
  # exit 3), which the compose command treats as success so a re-run `up` still starts predict.
  "${COMPOSE[@]}" "${COMPOSE_FILES[@]}" -p "$PROJECT" run -T --rm train >"$WORK/train2.log" 2>&1 \
    || { tail -20 "$WORK/train2.log"; fail "re-running train (champion kept) did not exit 0"; }
  grep -E '^gate:|kept the current' "$WORK/train2.log" || true
  read -r code body <<<"$(http GET "$BASE_URL/ready")"
  [ "$(json_get "$body" run_id)" = "$REG_RUN" ] || fail "predict moved off the champion: $body"
  lap "compose: re-run train (kept)"
  t=$(date +%s)
  "${COMPOSE[@]}" "${COMPOSE_FILES[@]}" -p "$PROJECT" down -v --remove-orphans >/dev/null 2>&1
  echo "compose down took $(( $(date +%s) - t ))s"
  COMPOSE=()
  lap "compose down"
fi

# --- 9. publish to a loopback registry, pull back by digest --------------------------------------
if [ "$RUN_REGISTRY" = 1 ]; then
  log "9. publish $IMAGE to a loopback docker-registry, remove it, pull it back by digest, run it"
  if ! command -v docker-registry >/dev/null; then
    $SUDO apt-get update -q >/dev/null
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker-registry >/dev/null
  fi
  REG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  rm -rf "$WORK/registry-data"
  cat >"$WORK/registry.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $WORK/registry-data
http:
  addr: 127.0.0.1:$REG_PORT
YAML
  docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
  REGISTRY_PID=$!
  wait_http "http://127.0.0.1:$REG_PORT/v2/" 30
  echo "docker-registry $(docker-registry --version | awk '{print $3}') on 127.0.0.1:$REG_PORT (pid $REGISTRY_PID)"
  # The tested image, by ID: what scripts/publish.sh (make publish) pushes.
  echo "$TESTED_ID $IMAGE" >"$WORK/tested-image"
  REF=127.0.0.1:$REG_PORT/ride-duration:ctest
  TESTED_FILE=$WORK/tested-image DIGEST_FILE=$WORK/image-digest bash scripts/publish.sh "$REF" \
    || fail "scripts/publish.sh $REF"
  DIGEST=$(cat "$WORK/image-digest")
  PINNED=127.0.0.1:$REG_PORT/ride-duration@$DIGEST
  # The registry holds the manifest under that digest and every blob it names (config + layers).
  python3 - "http://127.0.0.1:$REG_PORT/v2/ride-duration" "$DIGEST" <<'PY' || fail "the registry does not hold $DIGEST"
import hashlib, json, sys, urllib.request
base, digest = sys.argv[1], sys.argv[2]
accept = ", ".join(["application/vnd.docker.distribution.manifest.v2+json", "application/vnd.oci.image.manifest.v1+json"])
with urllib.request.urlopen(urllib.request.Request(f"{base}/manifests/{digest}", headers={"Accept": accept}), timeout=10) as r:
    raw = r.read()
assert "sha256:" + hashlib.sha256(raw).hexdigest() == digest, "manifest content does not hash to its digest"
manifest = json.loads(raw)
blobs = [manifest["config"], *manifest["layers"]]
for blob in blobs:
    with urllib.request.urlopen(urllib.request.Request(f"{base}/blobs/{blob['digest']}", method="HEAD"), timeout=10) as r:
        assert r.status == 200 and int(r.headers["Content-Length"]) == blob["size"], blob
print(f"registry: manifest {digest[:19]}... ({manifest['mediaType']}), config + {len(blobs) - 1} layers, "
      f"{sum(b['size'] for b in blobs[1:]) / 1e6:.0f} MB compressed")
PY
  # Remove the image (all its tags), so the run below can only use what the pull brings. --no-prune
  # keeps the classic builder's intermediate images (the next build's cache); layers they share are
  # not downloaded again ("Already exists"), the manifest and config always are.
  docker rmi -f --no-prune "$TESTED_ID" >/dev/null
  if docker image inspect "$TESTED_ID" >/dev/null 2>&1; then fail "image $TESTED_ID still local after docker rmi"; fi
  echo "removed the local image $TESTED_ID"
  docker pull "$PINNED" >"$WORK/pull.log" 2>&1 || { cat "$WORK/pull.log"; fail "docker pull $PINNED"; }
  grep -E '^(Digest|Status):' "$WORK/pull.log" || true
  PULLED_ID=$(docker image inspect -f '{{.Id}}' "$PINNED")
  echo "pulled $PINNED -> image $PULLED_ID"
  [ "$PULLED_ID" = "$TESTED_ID" ] || fail "pulled image $PULLED_ID is not the tested $TESTED_ID"
  RUN_IMAGE=$PINNED run_app "$CNAME-pulled"
  wait_http "$BASE_URL/ready" 60 "$CNAME-pulled"
  read -r code body <<<"$(http POST "$BASE_URL/predict" "$REF_RIDE")"
  echo "pulled by digest: POST /predict $REF_RIDE -> $code $body"
  [ "$code" = 200 ] || fail "the image pulled by digest answered $code"
  python3 - "$body" "$EXPECTED" <<'PY' || fail "the image pulled by digest gives another reference answer"
import json, sys
d, exp = json.loads(sys.argv[1])["duration"], float(sys.argv[2])
assert abs(d - exp) <= 1e-6 * max(1.0, abs(exp)), f"{d} != {exp}"
print(f"reference ride from the image pulled by digest: {d:.4f} min (expected {exp:.4f})")
PY
  docker rm -f "$CNAME-pulled" >/dev/null
  docker tag "$PINNED" "$IMAGE"   # the tested tag again, for make publish
  lap "registry: push, rmi, pull by digest, run"
fi
# What passed, for `make publish` (scripts/publish.sh pushes this image ID, never a rebuild).
mkdir -p "$(dirname "$TESTED_FILE")"
echo "$TESTED_ID $IMAGE" >"$TESTED_FILE"
echo "recorded the tested image $TESTED_ID ($IMAGE) in $TESTED_FILE"
