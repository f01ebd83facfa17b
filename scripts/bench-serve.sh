#!/usr/bin/env bash
# The iris pipeline (normalize -> classify -> label) served over HTTP by a
# node built with the `production` profile (PROFILE=release for the
# ordinary release build), driven by wrk; and, when a Python with Ray Serve is
# given, the same pipeline served by Ray Serve in the same run.
#
#   scripts/bench-serve.sh                                  # Symphony only
#   PEERS_PY=path/to/venv/bin/python scripts/bench-serve.sh # plus Ray Serve
#
# Needs wrk (Debian: apt-get install wrk). Every figure is one JSON line.
# DURATION (seconds per level, default 20) shortens a run.
#
# Then the same on a three-node cluster on this machine: the model
# registered on node 1, deployed with 3 replicas (one a node), the pipeline
# registered on every node, and the clients split over the three nodes'
# invoke endpoints (one wrk each, at once); the line sums their rates and
# takes the worst p99. NODES3=0 skips it.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
duration="${DURATION:-20}"
peers="${PEERS_DIR:-../shared/bench-peers}"
lua="$repo/scripts/wrk_post.lua"
body='{"features": [5.1, 3.5, 1.4, 0.2]}'

profile="${PROFILE:-production}"
cargo build --profile "$profile" --locked --quiet --bin symphony
bin="${CARGO_TARGET_DIR:-$repo/target}/$profile/symphony"

work="$(mktemp -d)"
node_pid=""
cluster_pids=()
cleanup() {
  if [ -n "$node_pid" ]; then kill "$node_pid" 2>/dev/null || true; wait "$node_pid" 2>/dev/null || true; fi
  for pid in "${cluster_pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
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

if [ "${NODES3:-1}" != "0" ]; then
  bases=()
  seed=""
  for i in 1 2 3; do
    cport="$(port_of)"; hport="$(port_of)"
    {
      echo "name: n$i"
      echo "listen: 127.0.0.1:$cport"
      echo "http: 127.0.0.1:$hport"
      echo "data_dir: $work/data-n$i"
      echo "cookie: bench-cookie"
      [ -n "$seed" ] && echo "seeds: [$seed]"
    } > "$work/n$i.yaml"
    [ -z "$seed" ] && seed="127.0.0.1:$cport"
    SYMPHONY_LOG=warn "$bin" node --config "$work/n$i.yaml" 2> "$work/n$i.log" &
    cluster_pids+=($!)
    bases+=("http://127.0.0.1:$hport")
  done
  for b in "${bases[@]}"; do
    for _ in $(seq 1 300); do curl -sf "$b/health" > /dev/null && break; sleep 0.1; done
  done
  # Every node must see the other two before the deployment is placed.
  for b in "${bases[@]}"; do
    for _ in $(seq 1 300); do
      [ "$(curl -sf "$b/api/v1/cluster" | python3 -c 'import json,sys; print(sum(m["state"]=="up" for m in json.load(sys.stdin)["members"]))')" = 3 ] && break
      sleep 0.1
    done
  done
  b1="${bases[0]}"
  curl -sf -X POST -H 'content-type: application/octet-stream' \
    --data-binary @models/iris.onnx "$b1/api/v1/models/iris/versions" > /dev/null
  curl -sf -X PUT -H 'content-type: application/json' -d '{"version": 1}' \
    "$b1/api/v1/models/iris/aliases/production" > /dev/null
  curl -sf -X PUT -H 'content-type: application/json' -d '{"version": "1", "replicas": 3}' \
    "$b1/api/v1/models/iris/deployment" > /dev/null
  for b in "${bases[@]}"; do
    # The alias reaches the node by replication before the pipeline names it.
    for _ in $(seq 1 300); do curl -sf "$b/api/v1/models/iris" | grep -q production && break; sleep 0.1; done
    curl -sf -X POST -H 'content-type: application/json' -d @"$work/pipeline.json" \
      "$b/api/v1/pipelines" > /dev/null
    for _ in $(seq 1 300); do
      curl -sf -X POST -H 'content-type: application/json' -d "$body" "$b/api/v1/pipelines/iris/invoke" \
        | grep -q setosa && break
      sleep 0.1
    done
  done
  for b in "${bases[@]}"; do WRK_BODY="$body" wrk -t1 -c4 -d2s -s "$lua" "$b/api/v1/pipelines/iris/invoke" > /dev/null; done
  line="$(WRK_BODY="$body" wrk -t1 -c1 -d"${duration}s" --latency -s "$lua" "$b1/api/v1/pipelines/iris/invoke" | grep '^{')"
  echo "${line%\}}, \"system\": \"symphony\", \"nodes\": 3, \"concurrency\": 1}"
  wrk_pids=()
  for i in 0 1 2; do
    c=$(( i == 0 ? 22 : 21 ))
    (WRK_BODY="$body" wrk -t1 -c"$c" -d"${duration}s" --latency -s "$lua" \
      "${bases[$i]}/api/v1/pipelines/iris/invoke" | grep '^{' > "$work/wrk-$i.json") &
    wrk_pids+=($!)
  done
  wait "${wrk_pids[@]}"
  python3 - "$work"/wrk-*.json <<'PY'
import json, sys
parts = [json.loads(open(p).read()) for p in sys.argv[1:]]
print(json.dumps({
    "tool": "wrk", "requests": sum(p["requests"] for p in parts),
    "rps": round(sum(p["rps"] for p in parts), 1),
    "p50_ms": max(p["p50_ms"] for p in parts), "p99_ms": max(p["p99_ms"] for p in parts),
    "max_ms": max(p["max_ms"] for p in parts), "errors": sum(p["errors"] for p in parts),
    "system": "symphony", "nodes": 3, "concurrency": 64,
}))
PY
  for pid in "${cluster_pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  cluster_pids=()
fi

if [ -n "${PEERS_PY:-}" ] && [ -f "$peers/ray_serve_bench.py" ]; then
  mkdir -p "$work/model"
  cp models/iris.onnx models/iris_reference.json "$work/model/"
  (cd "$peers" && "$PEERS_PY" ray_serve_bench.py --model-dir "$work/model" --reps 1 \
      --variants nobatch --concurrency 1 --wrk-concurrency 64 --duration "$duration" \
      --ray-temp-dir "$work/ray" 2>/dev/null | grep '^{')
else
  echo "# Ray Serve baseline skipped: set PEERS_PY to a Python with ray[serve] installed" >&2
fi
