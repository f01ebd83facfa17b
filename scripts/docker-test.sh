#!/usr/bin/env bash
# The three-node scenario in Docker: build the image, start cluster/compose.yaml,
# submit a run of 30 tasks through node1, kill one worker container and cut
# another off the network in the middle of it, expect the run to succeed
# anyway, reconnect the second and expect node1 to see it `up` again. Then
# `durability: replicated` runs whose owner is paused, cut off the network
# and killed: each finishes on the others, with nothing committed twice.
# Everything is torn down (volumes included) on the way out.
#
#   scripts/docker-test.sh
#
# Without a Docker engine it prints a SKIPPED line and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! docker info >/dev/null 2>&1; then
    echo "SKIPPED: docker scenario (no Docker engine)"
    exit 0
fi
if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE=(docker-compose)
else
    echo "SKIPPED: docker scenario (neither \`docker compose\` nor docker-compose is installed)"
    exit 0
fi

PROJECT=symphony-test-$$
export SYMPHONY_IMAGE=${SYMPHONY_IMAGE:-symphony:local}
export SYMPHONY_COOKIE=cookie-$RANDOM$RANDOM
export SYMPHONY_TOKEN=token-$RANDOM$RANDOM
export SYMPHONY_PORT1=${SYMPHONY_PORT1:-18081}
export SYMPHONY_PORT2=${SYMPHONY_PORT2:-18082}
export SYMPHONY_PORT3=${SYMPHONY_PORT3:-18083}
export SYMPHONY_SERVER=http://127.0.0.1:$SYMPHONY_PORT1
SYMPHONY="${CARGO_TARGET_DIR:-target}/release/symphony"
WORK=$(mktemp -d)

compose() { "${COMPOSE[@]}" -p "$PROJECT" -f cluster/compose.yaml "$@"; }
say() { printf '==> %s\n' "$*"; }
fail() {
    printf 'FAILED: %s\n' "$*" >&2
    exit 1
}

cleanup() {
    local status=$?
    if [ "$status" -ne 0 ]; then
        echo "--- node logs ---" >&2
        compose logs --no-color --tail=80 >&2 || true
    fi
    say "tearing down"
    compose down -v --remove-orphans >/dev/null 2>&1 || true
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT

# Waits until `cmd…` succeeds, up to $1 seconds; fails naming $2.
wait_for() {
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || fail "timed out after ${seconds}s waiting for $what"
        sleep 0.2
    done
}

healthy() { curl -fsS "http://127.0.0.1:$1/health"; }

# The state node1 sees a member in (empty when it does not know it).
member_state() {
    curl -fsS -H "Authorization: Bearer $SYMPHONY_TOKEN" "$SYMPHONY_SERVER/api/v1/cluster" |
        python3 -c 'import json,sys; v=json.load(sys.stdin); print(next((m["state"] for m in v["members"] if m["name"]==sys.argv[1]), ""))' "$1"
}
member_is() { [ "$(member_state "$1")" = "$2" ]; }

# Attempts that succeeded so far in the run.
succeeded() {
    "$SYMPHONY" status "$RUN" --json |
        python3 -c 'import json,sys; v=json.load(sys.stdin); print(v["progress"]["attempts_succeeded"] if v["status"]=="running" else 10**9)'
}
at_least() { [ "$(succeeded)" -ge "$1" ]; }

say "building the image"
scripts/build-image.sh
[ -x "$SYMPHONY" ] || fail "$SYMPHONY was not built"

say "starting the cluster (project $PROJECT)"
compose up -d
for port in "$SYMPHONY_PORT1" "$SYMPHONY_PORT2" "$SYMPHONY_PORT3"; do
    wait_for 60 "the node on port $port to be healthy" healthy "$port"
done
for n in node2 node3; do
    wait_for 30 "node1 to see $n up" member_is "$n" up
done
"$SYMPHONY" cluster status

cat >"$WORK/chaos.yaml" <<'EOF'
version: 1
name: docker-chaos
durability: local
defaults:
  retry: { max_attempts: 3, initial: 100ms }
tasks:
  sleep:
    uses: builtin/sleep
    for_each: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
               16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30]
    max_parallel: 3
    with: { duration: 300ms }
EOF

say "submitting 30 tasks through node1"
RUN=$("$SYMPHONY" submit "$WORK/chaos.yaml")
say "run $RUN"

wait_for 60 "the first attempts to succeed" at_least 3
NODE2=$(compose ps -q node2)
say "killing node2"
docker kill "$NODE2" >/dev/null

wait_for 60 "more attempts to succeed" at_least 9
NODE3=$(compose ps -q node3)
NETWORK=$(docker inspect -f '{{range $name, $_ := .NetworkSettings.Networks}}{{$name}}{{end}}' "$NODE3")
say "disconnecting node3 from $NETWORK"
docker network disconnect "$NETWORK" "$NODE3"

say "waiting for the run to end"
set +e
timeout 180 "$SYMPHONY" watch "$RUN" --json >"$WORK/outcome.json" 2>"$WORK/events.log"
code=$?
set -e
cat "$WORK/outcome.json"
placed=$(grep -o 'scheduled on node[0-9]' "$WORK/events.log" | sort | uniq -c | tr -s ' ' || true)
say "attempts placed: $(echo "$placed" | tr '\n' ' ')"
[ "$code" -eq 0 ] || fail "the run did not succeed (exit code $code)"
python3 -c 'import json,sys; v=json.load(open(sys.argv[1])); assert v["status"]=="succeeded", v; assert v["tasks"]["sleep"]["items"]==30, v' \
    "$WORK/outcome.json" || fail "unexpected outcome"

say "reconnecting node3"
docker network connect --alias node3 "$NETWORK" "$NODE3"
wait_for 90 "node1 to see node3 up again" member_is node3 up
"$SYMPHONY" cluster status

# ---- replicated runs: the owner frozen, cut off, killed -------------------

cat >"$WORK/replicated.yaml" <<'EOF'
version: 1
name: docker-replicated
durability: replicated
tasks:
  one:   { uses: builtin/sleep, with: { duration: 1s } }
  two:   { uses: builtin/sleep, needs: [one], with: { duration: 1s } }
  three: { uses: builtin/sleep, needs: [two], with: { duration: 1s } }
  four:  { uses: builtin/sleep, needs: [three], with: { duration: 1s } }
EOF

# The status of run $1 as node1 reads it (from its copy of the replicated log).
run_status() {
    "$SYMPHONY" status "$1" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])'
}
run_is() { [ "$(run_status "$1")" = "$2" ]; }
first_done() {
    "$SYMPHONY" status "$1" --json |
        python3 -c 'import json,sys; v=json.load(sys.stdin); sys.exit(0 if v["progress"]["attempts_succeeded"]>=1 else 1)'
}
# One submission, one end, one result per task in the journal node1 holds.
committed_once() {
    curl -sS -m 10 -H "Authorization: Bearer $SYMPHONY_TOKEN" "$SYMPHONY_SERVER/api/v1/runs/$1/events" |
        python3 -c '
import json, sys, collections
ev = [json.loads(l[5:]) for l in sys.stdin if l.startswith("data:")]
kinds = collections.Counter(e["type"] for e in ev)
results = collections.Counter(e["key"]["task"] for e in ev if e["type"] == "task_succeeded")
assert kinds["run_submitted"] == 1 and kinds["run_succeeded"] == 1, kinds
assert len(results) == 4 and set(results.values()) == {1}, results
'
}
leader_known() {
    curl -fsS -H "Authorization: Bearer $SYMPHONY_TOKEN" "$SYMPHONY_SERVER/api/v1/cluster" |
        python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["raft"]["leader"] else 1)'
}
# Submits the replicated workflow through the node on port $1 (its owner).
submit_to() {
    "$SYMPHONY" submit "$WORK/replicated.yaml" --server "http://127.0.0.1:$1"
}

say "restarting node2"
docker start "$NODE2" >/dev/null
wait_for 60 "node2 to be healthy" healthy "$SYMPHONY_PORT2"
for n in node2 node3; do
    wait_for 60 "node1 to see $n up" member_is "$n" up
done
wait_for 60 "a leader of the replicated log" leader_known

say "replicated run owned by node2; pausing node2"
RUN=$(submit_to "$SYMPHONY_PORT2")
wait_for 60 "its first task to be committed" first_done "$RUN"
docker pause "$NODE2" >/dev/null
wait_for 90 "the run to succeed without its frozen owner" run_is "$RUN" succeeded
docker unpause "$NODE2" >/dev/null
wait_for 60 "node1 to see node2 up again" member_is node2 up
committed_once "$RUN" || fail "run $RUN committed something twice"

say "replicated run owned by node2; disconnecting node2"
wait_for 60 "a leader of the replicated log" leader_known
RUN=$(submit_to "$SYMPHONY_PORT2")
wait_for 60 "its first task to be committed" first_done "$RUN"
NETWORK2=$(docker inspect -f '{{range $name, $_ := .NetworkSettings.Networks}}{{$name}}{{end}}' "$NODE2")
docker network disconnect "$NETWORK2" "$NODE2"
wait_for 90 "the run to succeed on the majority" run_is "$RUN" succeeded
docker network connect --alias node2 "$NETWORK2" "$NODE2"
wait_for 90 "node1 to see node2 up again" member_is node2 up
committed_once "$RUN" || fail "run $RUN committed something twice"

say "replicated run owned by node3; killing node3"
wait_for 60 "a leader of the replicated log" leader_known
RUN=$(submit_to "$SYMPHONY_PORT3")
wait_for 60 "its first task to be committed" first_done "$RUN"
docker kill "$NODE3" >/dev/null
wait_for 90 "the run to succeed without its owner" run_is "$RUN" succeeded
committed_once "$RUN" || fail "run $RUN committed something twice"
"$SYMPHONY" cluster status

echo "PASSED: docker scenario"
