#!/usr/bin/env bash
# The iris pipeline (normalize -> classify -> label) served over HTTP by a
# release-built node, driven by wrk; and, when a Python with Ray Serve is
# given, the same pipeline served by Ray Serve in the same run.
#
#   scripts/bench-serve.sh                                  # Symphony only
#   PEERS_PY=path/to/venv/bin/python scripts/bench-serve.sh # plus Ray Serve
#
# Needs wrk (Debian: apt-get install wrk). Every figure is one JSON line.
# DURATION (seconds per level, default 20) shortens a run.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
duration="${DURATION:-20}"
peers="${PEERS_DIR:-../shared/bench-peers}"
lua="$repo/scripts/wrk_post.lua"
body='{"features": [5.1, 3.5, 1.4, 0.2]}'

cargo build --release --quiet
bin="${CARGO_TARGET_DIR:-$repo/target}/release/symphony"

work="$(mktemp -d)"
node_pid=""
cleanup() {
  if [ -n "$node_pid" ]; then kill "$node_pid" 2>/dev/null || true; wait "$node_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

port_of() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http_port="$(port_of)"
cat > "$work/node.yaml" <<YAML
name: bench
listen: 127.0.0.1:$(port_of)
http: 127.0.0.1:$http_port
data_dir: $work/data
YAML
SYMPHONY_LOG=warn "$bin" node --config "$work/node.yaml" 2> "$work/node.log" &
node_pid=$!
base="http://127.0.0.1:$http_port"
for _ in $(seq 1 300); do
  curl -sf "$base/health" > /dev/null && break
  sleep 0.1
done

curl -sf -X POST -H 'content-type: application/octet-stream' \
  --data-binary @models/iris.onnx "$base/api/v1/models/iris/versions" > /dev/null
curl -sf -X PUT -H 'content-type: application/json' -d '{"version": 1}' \
  "$base/api/v1/models/iris/aliases/production" > /dev/null
python3 -c 'import json,sys; print(json.dumps({"workflow": open(sys.argv[1]).read(), "name": "iris.yaml"}))' \
  examples/pipelines/iris.yaml > "$work/pipeline.json"
curl -sf -X POST -H 'content-type: application/json' -d @"$work/pipeline.json" \
  "$base/api/v1/pipelines" > /dev/null
url="$base/api/v1/pipelines/iris/invoke"
curl -sf -X POST -H 'content-type: application/json' -d "$body" "$url" > "$work/answer.json"
grep -q setosa "$work/answer.json" || { echo "unexpected answer: $(cat "$work/answer.json")" >&2; exit 1; }

# A warm-up, then one client and 64 clients.
WRK_BODY="$body" wrk -t1 -c8 -d2s -s "$lua" "$url" > /dev/null
for c in 1 64; do
  line="$(WRK_BODY="$body" wrk -t1 -c"$c" -d"${duration}s" --latency -s "$lua" "$url" | grep '^{')"
  echo "${line%\}}, \"system\": \"symphony\", \"nodes\": 1, \"concurrency\": $c}"
done
kill "$node_pid"; wait "$node_pid" 2>/dev/null || true; node_pid=""

if [ -n "${PEERS_PY:-}" ] && [ -f "$peers/ray_serve_bench.py" ]; then
  mkdir -p "$work/model"
  cp models/iris.onnx models/iris_reference.json "$work/model/"
  (cd "$peers" && "$PEERS_PY" ray_serve_bench.py --model-dir "$work/model" --reps 1 \
      --variants nobatch --concurrency 1 --wrk-concurrency 64 --duration "$duration" \
      --ray-temp-dir "$work/ray" 2>/dev/null | grep '^{')
else
  echo "# Ray Serve baseline skipped: set PEERS_PY to a Python with ray[serve] installed" >&2
fi
