#!/usr/bin/env bash
# Store benchmark: how many rewards per second the gateway acknowledges with the durable
# store (`sqlite`: each acknowledged reward committed with an fsync, concurrent ones
# sharing a commit) against the memory store, and what a burst of rewards costs the
# session's proxied calls. Release build, loopback, one run per backend.
#
#   benches/store.sh
#
# For each backend: a fresh gateway (2 worker threads) and database, against
# benches/load/mock_upstream.rs; benches/load/rewardgen.rs creates a session, collects
# $BENCH_REWARDS rollouts, then posts one reward per rollout from $BENCH_CLIENTS
# closed-loop clients while proxied calls run at $BENCH_PROXY_RATE/s on the same session,
# and measures the same proxied load alone for comparison.
# CPU layout (2 cores): rewardgen on CPU 0; gateway and mock upstream on CPU 1
# (BENCH_PIN=0: unpinned). The database lives in target/bench (the disk CI and users have;
# fsync cost depends on it).
#
# Results: stdout and target/bench/store-<date>.txt.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
REWARDS=${BENCH_REWARDS:-15000}
CLIENTS=${BENCH_CLIENTS:-16}
PROXY_RATE=${BENCH_PROXY_RATE:-200}
PIN=${BENCH_PIN:-1}
STAMP=$(date +%Y%m%d-%H%M%S)
RUN=$ROOT/target/bench/store-run-$STAMP
REPORT=$ROOT/target/bench/store-$STAMP.txt
mkdir -p "$RUN"
log() { echo "[store.sh] $*" >&2; }

# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
build_release
if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ]; then
    ON_LG="taskset -c 0"
    ON_SUT="taskset -c 1"
else
    ON_LG=""
    ON_SUT=""
fi

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

UP_PORT=$(free_port)
# shellcheck disable=SC2086
$ON_SUT "$EX/mock_upstream" "127.0.0.1:$UP_PORT" >"$RUN/mock.log" 2>&1 &
PIDS+=($!)

{
    echo "# benches/store.sh, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
    echo "# $REWARDS rewards from $CLIENTS clients, proxied calls at $PROXY_RATE/s alongside; pinned=$PIN"
} | tee "$REPORT"
for backend in sqlite memory; do
    dir=$RUN/$backend
    mkdir -p "$dir"
    port=$(free_port)
    gateway_yaml "$port" "$dir" "$UP_PORT" "$backend" >"$dir/gateway.yaml"
    # shellcheck disable=SC2086
    env -u GEPA_BENCH_ADMIN_TOKEN_UNSET RUST_LOG=warn $ON_SUT "$BIN/gepa-gateway" -c "$dir/gateway.yaml" \
        >"$dir/gateway.log" 2>&1 &
    gw=$!
    PIDS+=("$gw")
    wait_ready "127.0.0.1:$port"
    log "$backend: running rewardgen"
    # shellcheck disable=SC2086
    $ON_LG "$EX/rewardgen" --gateway "http://127.0.0.1:$port" --rewards "$REWARDS" \
        --clients "$CLIENTS" --proxy-rate "$PROXY_RATE" --label "$backend" | tee -a "$REPORT"
    kill -KILL "$gw" 2>/dev/null || true
    wait "$gw" 2>/dev/null || true
done
log "report: $REPORT"
