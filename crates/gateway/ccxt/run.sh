#!/usr/bin/env bash
# Manual check (not run by .ci/run yet): two ccxt clients against `perpcore serve`, then
# ccxt.pro's watchers (watch.py).
# Needs python3 with venv; installs ccxt (pinned) into $CCXT_VENV (default: a temp dir).
set -euo pipefail
CCXT_VERSION=4.5.90
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
work="$(mktemp -d)"
venv="${CCXT_VENV:-$work/venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q "ccxt==$CCXT_VERSION"
cargo build -q -p perpcore-cli --manifest-path "$root/Cargo.toml"
printf '[[keys]]\napi_key = "key-a"\nsecret = "secret-a-0123456789"\naccount = 1\n[[keys]]\napi_key = "key-b"\nsecret = "secret-b-0123456789"\naccount = 2\n' > "$work/keys.toml"
chmod 600 "$work/keys.toml"
token="smoke-admin-token-$RANDOM$RANDOM"
PERPCORE_ADMIN_TOKEN="$token" "$root/target/debug/perpcore" serve --fresh --journal "$work/journal" \
    --keys "$work/keys.toml" --listen 127.0.0.1:18590 --admin-listen 127.0.0.1:18591 2> "$work/serve.log" &
pid=$!
trap 'kill -INT $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 50); do grep -q serving "$work/serve.log" && break; sleep 0.1; done
timeout 120 "$venv/bin/python" "$here/smoke.py" http://127.0.0.1:18590 http://127.0.0.1:18591 "$token"
# ccxt.pro (in the same package): watch_order_book and watch_orders over the websockets.
timeout 120 "$venv/bin/python" "$here/watch.py" http://127.0.0.1:18590 http://127.0.0.1:18591 "$token"
