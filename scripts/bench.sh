#!/usr/bin/env bash
# Engine benchmarks, and the Ray baseline beside them in the same run when a
# Python with Ray is given:
#
#   scripts/bench.sh                                  # Symphony only
#   PEERS_PY=path/to/venv/bin/python scripts/bench.sh # plus Ray, same machine
#
# Every figure is one JSON line: {"system", "metric", "value", "unit", ...}.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo bench --bench engine 2>/dev/null | grep '^{'

peers="${PEERS_DIR:-../shared/bench-peers}"
if [ -n "${PEERS_PY:-}" ] && [ -f "$peers/ray_bench.py" ]; then
  (cd "$peers" && "$PEERS_PY" ray_bench.py --only startup,task_throughput,chain_1kb 2>/dev/null | grep '^{')
else
  echo "# Ray baseline skipped: set PEERS_PY to a Python with ray installed" >&2
fi
