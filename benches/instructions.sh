#!/usr/bin/env bash
# User-space instructions per proxied request, passthrough vs gateway, counted by
# valgrind's callgrind: a figure that, unlike wall-clock throughput on a shared VM, repeats
# within about 1% for the same binaries and inputs (the store writer's share varies by about
# 2,000 per request: how many rollouts a transaction carries depends on timing). It
# leaves out the kernel's work, about half of either proxy's CPU here: per request the
# passthrough makes 3 sends and 2 receives, the gateway 2 and 2.
#
#   benches/instructions.sh
#
# For each target: start it under callgrind with the mock upstream beside it, send
# $BENCH_WARMUP requests, zero the counters, send $BENCH_REQUESTS requests at
# $BENCH_INSTR_RATE req/s (loadgen, 8 connections, 1 KiB chat body), dump, and divide.
# All threads are counted (the gateway's store writer and access-log writer included).
# Targets: the passthrough (benches/load/passthrough.rs); the gateway as shipped (SQLite
# store, access log at info); the gateway with the memory store and RUST_LOG=warn (the
# proxy path alone). Memory copies count one instruction per byte moved (`rep movsb` is
# counted per iteration), which overstates them next to their real cost, so the copy
# share is shown apart.
#
# Needs: valgrind (apt-get install -y valgrind), curl. Takes about 2 minutes.
# Results: target/bench/instructions-<date>.txt; callgrind files in target/bench/instr-<date>/
# (open them with callgrind_annotate --inclusive=yes).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
N=${BENCH_REQUESTS:-2000}
WARMUP=${BENCH_WARMUP:-400}
RATE=${BENCH_INSTR_RATE:-400}
STAMP=$(date +%Y%m%d-%H%M%S)
RUN=$ROOT/target/bench/instr-$STAMP
REPORT=$ROOT/target/bench/instructions-$STAMP.txt
mkdir -p "$RUN"
log() { echo "[instructions.sh] $*" >&2; }
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
require_tools "valgrind curl" valgrind callgrind_control callgrind_annotate curl
build_release

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

UP_PORT=$(free_port)
"$EX/mock_upstream" "127.0.0.1:$UP_PORT" >"$RUN/mock.log" 2>&1 &
PIDS+=($!)
BODY=$RUN/body-1k.json
make_body 1024 "$BODY"

# Runs one target under callgrind; prints "instructions memcpy requests".
measure() { # label url-to-post pid
    local label=$1 url=$2 pid=$3 out
    "$EX/loadgen" --url "$url" --body "$BODY" --rate "$RATE" --connections 8 \
        --duration "$(awk -v n="$WARMUP" -v r="$RATE" 'BEGIN{print n/r}')" --warmup 0 >/dev/null
    callgrind_control -z "$pid" >/dev/null
    out=$("$EX/loadgen" --url "$url" --body "$BODY" --rate "$RATE" --connections 8 \
        --duration "$(awk -v n="$N" -v r="$RATE" 'BEGIN{print n/r}')" --warmup 0 | grep '^LOADGEN ')
    callgrind_control -d "$pid" >/dev/null
    sleep 1
    local file responses non2xx
    file=$(ls -t "$RUN/$label.out".* | head -1)
    responses=$(printf '%s\n' "$out" | grep -o 'responses=[0-9]*' | cut -d= -f2)
    non2xx=$(printf '%s\n' "$out" | grep -o 'non2xx=[0-9]*' | cut -d= -f2)
    [ "$non2xx" = 0 ] || { echo "$label: $non2xx non-2xx responses" >&2; exit 1; }
    callgrind_annotate --inclusive=yes "$file" >"$RUN/$label.annotated.txt" 2>/dev/null
    local total copies
    total=$(grep 'PROGRAM TOTALS' "$RUN/$label.annotated.txt" | awk '{gsub(",","",$1); print $1}')
    copies=$(grep -m1 '__memcpy_avx_unaligned_erms\|__memmove_avx_unaligned_erms' "$RUN/$label.annotated.txt" |
        awk '{gsub(",","",$1); print $1}')
    echo "$total ${copies:-0} $responses"
}

vg() { # label
    echo valgrind --tool=callgrind --callgrind-out-file="$RUN/$1.out" --dump-instr=no
}

declare -A T
PASS_PORT=$(free_port)
log "passthrough under callgrind"
$(vg passthrough) "$EX/passthrough" "127.0.0.1:$PASS_PORT" "127.0.0.1:$UP_PORT" 2 >"$RUN/passthrough.log" 2>&1 &
P=$!
PIDS+=($P)
for _ in $(seq 600); do
    curl -sf -o /dev/null --max-time 1 -H 'content-type: application/json' --data-binary "@$BODY" \
        "http://127.0.0.1:$PASS_PORT/v1/chat/completions" && break
    sleep 0.1
done
T[passthrough]=$(measure passthrough "http://127.0.0.1:$PASS_PORT/v1/chat/completions" $P)
kill -TERM $P 2>/dev/null || true

gateway() { # label backend rust_log
    local label=$1 dir=$RUN/$1 port
    mkdir -p "$dir"
    port=$(free_port)
    gateway_yaml "$port" "$dir" "$UP_PORT" "$2" >"$dir/gateway.yaml"
    log "gateway ($2 store, RUST_LOG=$3) under callgrind"
    env -u GEPA_BENCH_ADMIN_TOKEN_UNSET RUST_LOG="$3" $(vg "$label") "$BIN/gepa-gateway" \
        -c "$dir/gateway.yaml" >"$RUN/$label.log" 2>&1 &
    local pid=$!
    PIDS+=($pid)
    wait_ready "127.0.0.1:$port" 60 # valgrind starts slowly
    local sid
    sid=$(create_session "127.0.0.1:$port")
    T[$label]=$(measure "$label" "http://127.0.0.1:$port/api/gepa/v1/$sid/chat/completions" $pid)
    kill -TERM $pid 2>/dev/null || true
}
gateway gateway sqlite info
gateway gateway-memory-warn memory warn

{
    echo "gepa-gateway instructions per request, $(date -u +%Y-%m-%dT%H:%M:%SZ), git $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo '+dirty')"
    echo "valgrind $(valgrind --version | sed 's/valgrind-//'), callgrind; $N requests at $RATE req/s after $WARMUP warm-up, 8 connections, 1 KiB chat body; all threads; user space only"
    echo
    printf '%-22s %12s %12s %10s %14s\n' target "instr/req" "of which copy" "ratio" "excl. copy"
    base=$(echo "${T[passthrough]}" | awk '{print $1/$3}')
    base_nc=$(echo "${T[passthrough]}" | awk '{print ($1-$2)/$3}')
    for t in passthrough gateway gateway-memory-warn; do
        echo "${T[$t]}" | awk -v t="$t" -v b="$base" -v bn="$base_nc" '{
            per = $1 / $3; copy = $2 / $3; nc = per - copy;
            printf "%-22s %12.0f %12.0f %9.2fx %9.0f (%.2fx)\n", t, per, copy, per / b, nc, nc / bn }'
    done
    echo
    echo "gateway: store writer thread and logging phase (access-log line + metrics) per request (instructions, inclusive):"
    n=$(echo "${T[gateway]}" | awk '{print $3}')
    for f in "store writer thread|src/store/sqlite.rs:std::sys::backtrace::__rust_begin_short_backtrace" \
        "logging phase|ProxyHttp>::logging::{{closure}}"; do
        grep -m1 -F "${f#*|}" "$RUN/gateway.annotated.txt" | awk -v n="$n" -v f="${f%%|*}" \
            '{gsub(",","",$1); printf "  %-20s %8.0f per request\n", f, $1 / n}'
    done
    echo "callgrind files: ${RUN#"$ROOT"/}"
} | tee "$REPORT"
