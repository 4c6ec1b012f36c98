#!/usr/bin/env bash
# Long schemathesis run against a live service (`make fuzz`): starts gunicorn on a free loopback
# port, fuzzes /openapi.json with every phase and every check on every operation (no exceptions;
# scripts/schemathesis.toml holds the settings shared with tests/protocols/test_fuzz.py), stops gunicorn, exits
# with schemathesis' status. The length rules JSON Schema cannot state (x-length-rules) are made true
# in schema-valid cases by the hook in scripts/schemathesis_hooks.py (tests/protocols/fuzz_rules.py).
#
#   FUZZ_EXAMPLES   cases per operation and phase (default 1000)
#   FUZZ_SEED       reproduce a run (schemathesis prints the seed)
#   FUZZ_REPORT_DIR JUnit report, gunicorn log, crash cache (`st replay` from there); default build/fuzz
# gunicorn, schemathesis and python come from PATH (the Makefile puts .venv/bin first).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

examples=${FUZZ_EXAMPLES:-1000}
report_dir=${FUZZ_REPORT_DIR:-build/fuzz}
port=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
mkdir -p "$report_dir"

# A small batch limit lets generated arrays reach it (413) without megabyte bodies.
HOST=127.0.0.1 PORT=$port WEB_CONCURRENCY=${WEB_CONCURRENCY:-2} MAX_BATCH_SIZE=${MAX_BATCH_SIZE:-20} \
    gunicorn >"$report_dir/gunicorn.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true' EXIT

python - "$url/ready" <<'PY'
import sys, time, urllib.request
deadline = time.monotonic() + 60
while True:
    try:
        urllib.request.urlopen(sys.argv[1], timeout=2)
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit(f"{sys.argv[1]} not ready after 60 s")
        time.sleep(0.2)
PY

args=(--checks all --max-examples "$examples" --generation-database none --no-color --report junit --report-dir .)
[[ -n ${FUZZ_SEED:-} ]] && args+=(--seed "$FUZZ_SEED")
status=0
# run inside the report directory: schemathesis keeps its crash cache (for `st replay`) in the cwd
(cd "$report_dir" && PYTHONPATH="$root:$root/scripts${PYTHONPATH:+:$PYTHONPATH}" \
    SCHEMATHESIS_HOOKS=schemathesis_hooks schemathesis --config-file "$root/scripts/schemathesis.toml" run "$url/openapi.json" \
    "${args[@]}") || status=$?
if grep -q Traceback "$report_dir/gunicorn.log"; then
    echo "the service logged a traceback: see $report_dir/gunicorn.log" >&2
    status=1
fi
exit "$status"
