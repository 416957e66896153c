#!/usr/bin/env bash
# Concurrent A/B of two proxies' CPU cost per request: both serve at the same time, on the
# same core, so the VM's noise (CPU steal, the neighbours' cache pressure) hits both alike.
#
#   benches/ab.sh SPEC_A SPEC_B [ROUNDS]
#
# SPEC is `passthrough` (benches/load/passthrough.rs) or `gateway` followed by
# comma-separated settings: store=sqlite|memory (sqlite), log=RUST_LOG (info),
# bin=PATH (target/release/gepa-gateway: compare two builds), and the storage tunables
# write_behind_ms=N and rollouts_in_memory=N. Examples:
#
#   benches/ab.sh passthrough gateway
#   benches/ab.sh gateway,write_behind_ms=10 gateway,write_behind_ms=50 5
#   benches/ab.sh gateway,bin=/tmp/gw-before gateway
#
# Why: sequential runs on this shared 2-core VM vary by ±20% (benches/load.sh runs its 1 KiB
# comparison in interleaved rounds for that reason), which hides a 5% change. Here each
# target has its own mock upstream; targets and mocks all run on CPU 1 and two wrk (one per
# target, 32 connections each, 1 KiB chat body) on CPU 0. Each round reports each target's
# requests and CPU time per request (all its threads, from /proc/PID/stat; its mock's in
# brackets) and the ratio B/A of the CPU per request, which is the figure to read: the
# scheduler shares the core, so the request counts say little. The second ratio adds each
# target's mock: 1 / it is the throughput ratio to expect where each target shares a core
# with its mock, as in benches/load.sh. Started with the same spec twice, the ratio comes out
# within about 3% of 1.00, which is the method's resolution.
#
# Env: BENCH_DURATION (8 s per round), BENCH_SKIP_BUILD (0).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
[ $# -ge 2 ] || { sed -n '2,12p' "$0" >&2; exit 2; }
DUR=${BENCH_DURATION:-8}
ROUNDS=${3:-5}
RUN=$(mktemp -d /tmp/gepa-ab.XXXXXX)
log() { echo "[ab.sh] $*" >&2; }
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
require_tools "wrk curl util-linux" wrk curl taskset
build_release

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$RUN"
}
trap cleanup EXIT
make_body 1024 "$RUN/body.json"

# Starts a target and its mock; sets URL_<side>, PID_<side> and MOCK_<side>.
start() { # spec side
    local spec=$1 side=$2 up port pid url dir="$RUN/$2"
    mkdir -p "$dir"
    up=$(free_port)
    taskset -c 1 "$EX/mock_upstream" "127.0.0.1:$up" >"$dir/mock.log" 2>&1 &
    PIDS+=($!)
    printf -v "MOCK_$side" '%s' $!
    port=$(free_port)
    if [ "$spec" = passthrough ]; then
        taskset -c 1 "$EX/passthrough" "127.0.0.1:$port" "127.0.0.1:$up" 2 >"$dir/proxy.log" 2>&1 &
        pid=$!
        PIDS+=($pid)
        wait_http "127.0.0.1:$port"
        url="http://127.0.0.1:$port/v1/chat/completions"
    else
        local store=sqlite level=info bin=$BIN/gepa-gateway extra="" kv
        IFS=, read -ra settings <<<"${spec#gateway}"
        for kv in "${settings[@]}"; do
            case $kv in
                "") ;;
                store=*) store=${kv#store=} ;;
                log=*) level=${kv#log=} ;;
                bin=*) bin=${kv#bin=} ;;
                write_behind_ms=* | rollouts_in_memory=*) extra+="    ${kv%%=*}: ${kv#*=}"$'\n' ;;
                *) echo "unknown setting '$kv' in '$spec'" >&2; exit 2 ;;
            esac
        done
        { gateway_yaml "$port" "$dir" "$up" "$store"; printf '%s' "$extra"; } >"$dir/gateway.yaml"
        RUST_LOG=$level taskset -c 1 "$bin" -c "$dir/gateway.yaml" >"$dir/proxy.log" 2>&1 &
        pid=$!
        PIDS+=($pid)
        wait_ready "127.0.0.1:$port"
        url="http://127.0.0.1:$port/api/gepa/v1/$(create_session "127.0.0.1:$port")/chat/completions"
    fi
    printf -v "URL_$side" '%s' "$url"
    printf -v "PID_$side" '%s' "$pid"
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Drives both targets at once for $1 seconds; wrk's output in $RUN/{A,B}/wrk.
drive() {
    BENCH_BODY=$RUN/body.json taskset -c 0 wrk -t1 -c32 -d"$1"s -s benches/load.wrk.lua "$URL_A" >"$RUN/A/wrk" &
    local w=$!
    BENCH_BODY=$RUN/body.json taskset -c 0 wrk -t1 -c32 -d"$1"s -s benches/load.wrk.lua "$URL_B" >"$RUN/B/wrk"
    wait $w
}

start "$1" A
start "$2" B
log "A: $1"
log "B: $2"
drive 2 # warm-up: connections, pools, the store's first pages
HZ=$(getconf CLK_TCK)
echo "A = $1; B = $2; $ROUNDS rounds of $DUR s; CPU per request over all of each target's threads"
for r in $(seq "$ROUNDS"); do
    a0=$(cpu_ticks "$PID_A") b0=$(cpu_ticks "$PID_B") ma0=$(cpu_ticks "$MOCK_A") mb0=$(cpu_ticks "$MOCK_B")
    drive "$DUR"
    a1=$(cpu_ticks "$PID_A") b1=$(cpu_ticks "$PID_B") ma1=$(cpu_ticks "$MOCK_A") mb1=$(cpu_ticks "$MOCK_B")
    na=$(grep -o 'requests=[0-9]*' "$RUN/A/wrk" | cut -d= -f2)
    nb=$(grep -o 'requests=[0-9]*' "$RUN/B/wrk" | cut -d= -f2)
    # The last two columns are what the summary takes the median of.
    awk -v r="$r" -v na="$na" -v nb="$nb" -v ca=$((a1 - a0)) -v cb=$((b1 - b0)) \
        -v cma=$((ma1 - ma0)) -v cmb=$((mb1 - mb0)) -v hz="$HZ" 'BEGIN {
        ua = ca * 1e6 / hz / na; ub = cb * 1e6 / hz / nb
        ma = cma * 1e6 / hz / na; mb = cmb * 1e6 / hz / nb
        printf "round %d: A %6d requests %7.2f us/request (mock %5.2f) | B %6d requests %7.2f us/request (mock %5.2f) | B/A CPU per request %.3f, with the mock %.3f\n",
            r, na, ua, ma, nb, ub, mb, ub / ua, (ub + mb) / (ua + ma) }'
done | tee "$RUN/rounds"
median() { # field, counted from the end of the line (0: the last)
    awk -v c="$1" '{ print $(NF - c) }' "$RUN/rounds" | sort -n | awk '{ v[NR] = $1 } END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%.3f (min %.3f, max %.3f)", m, v[1], v[NR] }'
}
# The CPU ratio is the 5th field from the end, with a trailing comma that awk's numeric
# conversion drops.
echo "median B/A CPU per request: $(median 4), with each one's mock: $(median 0)"
echo "(a target that shares one core with its mock, as in benches/load.sh, serves about 1 / the second"
echo " ratio as many requests per second as the other: the figure to compare with load.sh's throughput ratio)"
for side in A B; do
    n=$(grep -c '"level":"ERROR"' "$RUN/$side/proxy.log" 2>/dev/null || true)
    [ "${n:-0}" = 0 ] || {
        echo "$side logged $n errors, so its figures are not valid; the first:"
        grep -m3 '"level":"ERROR"' "$RUN/$side/proxy.log"
    }
done
