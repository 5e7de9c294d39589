#!/usr/bin/env bash
# Validates docs/openapi.json and runs schemathesis (a property-based API fuzzer, from PyPI)
# against a live admin API: every documented operation gets generated valid and invalid
# requests, and any 5xx answer fails the run. The proxy runs on a scratch configuration in a
# temporary directory (the fuzzer's changes are real edits of that file).
#
# usage: scripts/fuzz-admin-api.sh [path to the switchyard binary] [examples per operation]
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-target/debug/switchyard}
examples=${2:-40}
venv="${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/schemathesis-venv"
[ -x "$binary" ] || cargo build --quiet --bin switchyard

if ! "$venv/bin/schemathesis" --version >/dev/null 2>&1; then
  echo "installing schemathesis into $venv"
  python3 -m venv "$venv"
  timeout 600 "$venv/bin/pip" install --quiet schemathesis openapi-spec-validator
fi

"$venv/bin/python" - docs/openapi.json <<'EOF'
import json, sys
from openapi_spec_validator import validate
validate(json.load(open(sys.argv[1])))
print(f"{sys.argv[1]}: a valid OpenAPI document")
EOF

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
work=$(mktemp -d)
listen=$(free_port)
admin=$(free_port)
token="fuzz-token-$(date +%s%N)"
echo "$token" >"$work/admin.token"
cat >"$work/switchyard.toml" <<EOF
[server]
listen = ["127.0.0.1:$listen"]
threads = 1
upgrade_socket = "$work/upgrade.sock"

[admin]
listen = "127.0.0.1:$admin"
token_file = "admin.token"

[[upstream]]
name = "app"
backends = [{ address = "127.0.0.1:9", tags = ["a"] }, { address = "127.0.0.1:10", tags = ["b"] }]

[[site]]
hosts = ["shop.test"]
[[site.route]]
upstream = "app"
split = { variants = [{ tag = "a", weight = 50 }, { tag = "b", weight = 50 }] }
EOF
SWITCHYARD_LOG=error "$binary" run --config "$work/switchyard.toml" >"$work/proxy.log" 2>&1 &
proxy=$!
trap 'kill $proxy 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 300); do
  curl -fs -o /dev/null -H "Authorization: Bearer $token" "http://127.0.0.1:$admin/api/v1/health" && break
  sleep 0.1
done

# /upgrade starts a new process (its failure is a 500 by design) and /logs/stream never ends:
# both are tested by the integration tests instead.
status=0
timeout 1200 "$venv/bin/schemathesis" run docs/openapi.json \
  --url "http://127.0.0.1:$admin" \
  --header "Authorization: Bearer $token" \
  --checks not_a_server_error \
  --max-examples "$examples" \
  --exclude-path /api/v1/upgrade \
  --exclude-path /api/v1/logs/stream \
  --request-timeout 60 \
  --workers 1 || status=$?
if ! kill -0 $proxy 2>/dev/null; then
  echo "the proxy died during the fuzz run; its log:" >&2
  cat "$work/proxy.log" >&2
  exit 1
fi
exit $status
