#!/usr/bin/env bash
# Real-client checks (issue 17 item 6), run by .ci/run and by hand: the unmodified ccxt
# from PyPI (pinned in requirements.txt) against `perpcore serve`.
#
# 1. A Python virtual environment at $CCXT_VENV (default: target/ci-venv, ignored by git),
#    made and filled from requirements.txt unless it already holds ccxt 4.5.90.
# 2. `perpcore serve` ($PERPCORE_BIN if set, as .ci/run sets it to the binary its tests
#    just built; else built here), started on 127.0.0.1 with ports the OS picks (read back from
#    its "serving ..." line), a fresh journal in a temporary folder, keys for accounts 1
#    and 2, and a small request-weight limit (WEIGHT_LIMIT) for limits.py.
# 3. The client scripts, each with a time limit: smoke.py, then any hook scripts, then
#    limits.py last (it spends 127.0.0.1's request weight for the rest of the minute).
# 4. On exit, whatever happened: serve gets SIGINT (a clean stop), then SIGKILL if it is
#    still there 10 s later; the temporary folder is removed.
# Every wait is bounded in count and time.
set -euo pipefail
CCXT_VERSION=4.5.90
WEIGHT_LIMIT=600
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
venv="${CCXT_VENV:-$root/target/ci-venv}"
work="$(mktemp -d)"
pid=""
stop() {
    if [ -n "$pid" ]; then
        kill -INT "$pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap stop EXIT

started=$(date +%s)
if ! "$venv/bin/python" -c "import ccxt, sys; sys.exit(ccxt.__version__ != '$CCXT_VERSION')" 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    timeout 600 "$venv/bin/pip" install -q --disable-pip-version-check --no-input -r "$here/requirements.txt"
fi
echo "ccxt venv ready in $(( $(date +%s) - started )) s ($venv)"

bin="${PERPCORE_BIN:-}"
if [ -z "$bin" ]; then
    cargo build -q -p perpcore-cli --manifest-path "$root/Cargo.toml"
    bin="$root/target/debug/perpcore"
fi
printf '[[keys]]\napi_key = "key-a"\nsecret = "secret-a-0123456789"\naccount = 1\n[[keys]]\napi_key = "key-b"\nsecret = "secret-b-0123456789"\naccount = 2\n' > "$work/keys.toml"
chmod 600 "$work/keys.toml"
token="smoke-admin-token-$RANDOM$RANDOM$RANDOM"
PERPCORE_ADMIN_TOKEN="$token" "$bin" serve --fresh --journal "$work/journal" \
    --keys "$work/keys.toml" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    --weight-limit "$WEIGHT_LIMIT" 2> "$work/serve.log" &
pid=$!
line=""
for _ in $(seq 100); do
    line=$(grep -s -m1 '^serving' "$work/serve.log" || true)
    [ -n "$line" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$line" ]; then
    echo "perpcore serve did not start:" >&2
    cat "$work/serve.log" >&2
    exit 1
fi
# "serving the API on http://127.0.0.1:P and the admin API on http://127.0.0.1:Q (...)"
api=$(echo "$line" | sed -E 's|.*the API on (http://[0-9.:]+).*|\1|')
adm=$(echo "$line" | sed -E 's|.*the admin API on (http://[0-9.:]+).*|\1|')

client() {
    timeout 120 "$venv/bin/python" "$here/$1" "$api" "$adm" "$token" "${@:2}"
}
client smoke.py
# Hook: further client checks go here, before limits.py, with the same arguments
# (API_URL ADMIN_URL ADMIN_TOKEN): the ccxt.pro watchers (watch.py) and WebSocket API
# calls (ws_api.py).
for hook in watch.py ws_api.py; do
    if [ -f "$here/$hook" ]; then client "$hook"; fi
done
client limits.py "$WEIGHT_LIMIT"
