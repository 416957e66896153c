#!/usr/bin/env bash
# Load benchmark: direct to a mock upstream vs a minimal Pingora passthrough proxy vs the
# gateway (release build), in one run, on loopback.
#
#   benches/load.sh
#
# What it measures, for each target:
#   - throughput at saturation: wrk (Debian's, closed loop), 1 thread, $BENCH_CONNS
#     connections, $BENCH_DURATION s after a 2 s warm-up; plus the CPU time the server
#     under test used per request (from /proc/PID/stat);
#   - latency at a fixed rate: benches/load/loadgen.rs (open loop, wrk2-style
#     coordinated-omission correction), $BENCH_RATE req/s over 16 connections;
#   - 1 KiB chat body for all three, 1 MiB body for passthrough and gateway
#     ($BENCH_RATE_1M req/s for the fixed-rate part);
#   - SSE: time to first body byte and the delay between events as the client sees them,
#     through each, 5 events 10 ms apart ($BENCH_SSE_RATE/s);
#   - the gateway once more at saturation with RUST_LOG=warn (no access log), to show
#     what the per-request access log costs;
#   - the 1 KiB passthrough/gateway comparison once more as a concurrent A/B
#     (benches/ab.sh), whose CPU-per-request ratio the VM's noise does not swamp.
#
# CPU layout (2 cores): the load generator (wrk, loadgen) runs alone on CPU 0; everything
# that serves runs on CPU 1: the mock upstream and, for passthrough and gateway, the proxy
# under test (2 worker threads). So every target is measured as "what one core of server
# side can do", with the mock's share the same in all three; the table also gives each
# process's CPU time per request and both CPUs' utilisation, to show who was the limit.
# BENCH_PIN=0 runs everything unpinned.
#
# Results: a table on stdout, also written to target/bench/load-<date>.txt; logs and
# bodies in target/bench/run-<date>/.
#
# Tools: wrk for saturation (Debian's package; closed loop, one thread on CPU 0). It cannot
# hold a fixed rate and Debian has no wrk2, so fixed-rate latency comes from
# benches/load/loadgen.rs (hyper client, open loop, coordinated-omission corrected). The
# helpers (mock_upstream, passthrough, loadgen) are Cargo examples living in benches/load/,
# not benches/*.rs, which Cargo would also pick up as bench targets.
#
# Needs: wrk (installed with apt-get if missing and we are root), curl, taskset.
# Env knobs: BENCH_DURATION (8), BENCH_RATE (1000), BENCH_RATE_1M (100), BENCH_CONNS (64),
# BENCH_CONNS_1M (16), BENCH_SSE_RATE (100), BENCH_PIN (1), BENCH_SKIP_BUILD (0),
# BENCH_QUIET_WAIT (60: seconds to wait for other work on the machine to stop),
# BENCH_ROUNDS (5: interleaved passthrough/gateway rounds for the 1 KiB comparison).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
DUR=${BENCH_DURATION:-8}
RATE=${BENCH_RATE:-1000}
RATE_1M=${BENCH_RATE_1M:-100}
CONNS=${BENCH_CONNS:-64}
CONNS_1M=${BENCH_CONNS_1M:-16}
SSE_RATE=${BENCH_SSE_RATE:-100}
PIN=${BENCH_PIN:-1}
ROUNDS=${BENCH_ROUNDS:-5}
STAMP=$(date +%Y%m%d-%H%M%S)
OUT_DIR=$ROOT/target/bench
RUN=$OUT_DIR/run-$STAMP
REPORT=$OUT_DIR/load-$STAMP.txt
mkdir -p "$RUN"
T0=$(date +%s)

log() { echo "[load.sh] $*" >&2; }

# --- tools -------------------------------------------------------------------------------
if ! command -v wrk >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "installing wrk (apt-get install -y wrk)"
        apt-get install -y wrk >"$RUN/apt.log" 2>&1 ||
            { apt-get update >>"$RUN/apt.log" 2>&1 && apt-get install -y wrk >>"$RUN/apt.log" 2>&1; }
    else
        echo "wrk is missing: apt-get install -y wrk" >&2
        exit 1
    fi
fi
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
require_tools "curl util-linux" curl taskset

# --- build -------------------------------------------------------------------------------
build_release
T_BUILT=$(date +%s)

# --- CPU layout ----------------------------------------------------------------------------
if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ]; then
    ON_LG="taskset -c 0"   # load generator, alone
    ON_SUT="taskset -c 1"  # mock upstream + proxy under test
    LAYOUT="CPU 0: load generator alone (wrk / loadgen); CPU 1: mock upstream + the proxy under test (passthrough or gateway)"
else
    ON_LG=""
    ON_SUT=""
    LAYOUT="unpinned: load generator, upstream mock and server under test share all $(nproc) CPUs"
fi

# --- processes -----------------------------------------------------------------------------
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    sleep 0.5
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    # The gateways' databases grow by about 1 GB per run; a disk that fills up makes the
    # store's writes fail (and cost less), which would skew the next run.
    rm -f "$RUN"/*/gepa.db "$RUN"/*/gepa.db-wal "$RUN"/*/gepa.db-shm
}
trap cleanup EXIT

start() { # name cpu-prefix cmd... ; sets LAST_PID
    local name=$1 prefix=$2
    shift 2
    # shellcheck disable=SC2086
    $prefix "$@" >"$RUN/$name.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

UP_PORT=$(free_port)
start mock-upstream "$ON_SUT" "$EX/mock_upstream" "127.0.0.1:$UP_PORT"
UP_PID=$LAST_PID
DIRECT_PORT=$UP_PORT
DIRECT_PID=$UP_PID
PASS_PORT=$(free_port)
start passthrough "$ON_SUT" "$EX/passthrough" "127.0.0.1:$PASS_PORT" "127.0.0.1:$UP_PORT" 2
PASS_PID=$LAST_PID

start_gateway() { # name rust_log ; sets GW_PORT GW_PID SESSION
    local name=$1 rust_log=$2 dir=$RUN/$1
    mkdir -p "$dir"
    GW_PORT=$(free_port)
    gateway_yaml "$GW_PORT" "$dir" "$UP_PORT" sqlite >"$dir/gateway.yaml"
    if [ -n "$rust_log" ]; then
        start "$name" "$ON_SUT" env -u GEPA_BENCH_ADMIN_TOKEN_UNSET RUST_LOG="$rust_log" \
            "$BIN/gepa-gateway" -c "$dir/gateway.yaml"
    else
        start "$name" "$ON_SUT" env -u GEPA_BENCH_ADMIN_TOKEN_UNSET -u RUST_LOG \
            "$BIN/gepa-gateway" -c "$dir/gateway.yaml"
    fi
    GW_PID=$LAST_PID
    wait_ready "127.0.0.1:$GW_PORT"
    SESSION=$(create_session "127.0.0.1:$GW_PORT")
}

start_gateway gateway ""
wait_http "127.0.0.1:$UP_PORT"
wait_http "127.0.0.1:$PASS_PORT"

# --- bodies ----------------------------------------------------------------------------------
BODY_1K=$RUN/body-1k.json
BODY_1M=$RUN/body-1m.json
make_body 1024 "$BODY_1K"
make_body 1048576 "$BODY_1M"

CHAT_PATH=/v1/chat/completions
GW_PATH() { echo "/api/gepa/v1/$SESSION/chat/completions"; }

# --- sanity: one request each, must be 200 (and carry x-gepa headers through the gateway) -----
check() { # label url body
    local code
    code=$(curl -s -o "$RUN/check-$1.out" -D "$RUN/check-$1.hdr" -w '%{http_code}' \
        -H 'content-type: application/json' --data-binary "@$3" "$2")
    [ "$code" = 200 ] || { echo "sanity check $1: HTTP $code" >&2; cat "$RUN/check-$1.out" >&2; exit 1; }
}
check direct "http://127.0.0.1:$DIRECT_PORT$CHAT_PATH" "$BODY_1K"
check passthrough "http://127.0.0.1:$PASS_PORT$CHAT_PATH" "$BODY_1K"
check gateway "http://127.0.0.1:$GW_PORT$(GW_PATH)" "$BODY_1K"
check passthrough-1m "http://127.0.0.1:$PASS_PORT$CHAT_PATH" "$BODY_1M"
check gateway-1m "http://127.0.0.1:$GW_PORT$(GW_PATH)" "$BODY_1M"
grep -qi '^x-gepa-rollout-id:' "$RUN/check-gateway.hdr" ||
    { echo "gateway response lacks x-gepa-rollout-id" >&2; exit 1; }

# --- measurement helpers ------------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { # pid -> utime+stime of the whole process (all threads)
    sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}
cpu_stat() { # -> "busy0 total0 busy1 total1 steal" (ticks, from /proc/stat)
    awk '$1=="cpu0"||$1=="cpu1"{t=0; for(i=2;i<=NF;i++) t+=$i; printf "%d %d ", t-$5-$6, t}
         $1=="cpu"{st=$9} END{print st}' /proc/stat
}
busy_pct() { # before after cpu-index(0|1)
    awk -v a="$1" -v b="$2" -v i="$3" 'BEGIN{split(a,x," "); split(b,y," ");
        printf "%.0f", 100*(y[2*i+1]-x[2*i+1])/(y[2*i+2]-x[2*i+2])}'
}

kv() { # key line -> value
    printf '%s\n' "$2" | tr ' ' '\n' | sed -n "s/^$1=//p"
}

declare -A R # results: R[label.key]

saturate() { # label url body conns sut_pid [header]
    local label=$1 url=$2 body=$3 conns=$4 pid=$5 header=${6:-}
    log "$label: wrk warm-up 2s, then ${DUR}s at saturation ($conns connections)"
    BENCH_BODY=$body BENCH_HEADER=$header $ON_LG wrk -t1 -c"$conns" -d2s --timeout 10s \
        -s benches/load.wrk.lua "$url" >/dev/null
    local c0 u0 c1 u1 s0 s1 line
    c0=$(cpu_ticks "$pid")
    u0=$(cpu_ticks "$UP_PID")
    s0=$(cpu_stat)
    # bash's `time` gives wrk's own CPU time (user + sys, seconds) for the "other" column.
    local TIMEFORMAT='%3U %3S'
    { time BENCH_BODY=$body BENCH_HEADER=$header $ON_LG wrk -t1 -c"$conns" -d"${DUR}s" \
        --timeout 10s -s benches/load.wrk.lua "$url" >"$RUN/wrk-$label.txt"; } 2>"$RUN/wrk-$label.time"
    line=$(grep '^WRK ' "$RUN/wrk-$label.txt")
    c1=$(cpu_ticks "$pid")
    u1=$(cpu_ticks "$UP_PID")
    s1=$(cpu_stat)
    R[$label.cpu0]=$(busy_pct "$s0" "$s1" 0)
    R[$label.cpu1]=$(busy_pct "$s0" "$s1" 1)
    R[$label.steal]=$(($(echo "$s1" | awk '{print $5}') - $(echo "$s0" | awk '{print $5}')))
    # CPU busy on the two CPUs that none of our processes (server, mock, wrk) accounts for:
    # kernel softirq work for loopback traffic (a few %) plus any other process's work.
    R[$label.other]=$(awk -v a="$s0" -v b="$s1" -v srv=$((c1 - c0 + u1 - u0)) -v k="$CLK_TCK" \
        -v lg="$(cat "$RUN/wrk-$label.time")" 'BEGIN{split(a,x," "); split(b,y," "); split(lg,w," ");
        if ("'"$pid"'" == "'"$UP_PID"'") srv = srv / 2;
        busy = (y[1]-x[1]) + (y[3]-x[3]); el = (y[2]-x[2] + y[4]-x[4]) / 2;
        printf "%.0f", 100 * (busy - srv - (w[1]+w[2])*k) / el}')
    local reqs secs
    reqs=$(kv requests "$line")
    secs=$(awk -v d="$(kv duration_us "$line")" 'BEGIN{print d/1e6}')
    R[$label.rps]=$(kv rps "$line")
    R[$label.sat_p50]=$(kv p50_ms "$line")
    R[$label.sat_p99]=$(kv p99_ms "$line")
    R[$label.errs]=$(($(kv connect_err "$line") + $(kv read_err "$line") + $(kv write_err "$line") + $(kv timeout_err "$line")))
    R[$label.status_err]=$(kv status_err "$line")
    R[$label.cpu_pct]=$(awk -v t=$((c1 - c0)) -v k="$CLK_TCK" -v s="$secs" 'BEGIN{printf "%.0f", 100*t/k/s}')
    R[$label.us_req]=$(awk -v t=$((c1 - c0)) -v k="$CLK_TCK" -v n="$reqs" 'BEGIN{printf "%.1f", 1e6*t/k/n}')
    if [ "$pid" != "$UP_PID" ]; then
        R[$label.up_us_req]=$(awk -v t=$((u1 - u0)) -v k="$CLK_TCK" -v n="$reqs" 'BEGIN{printf "%.1f", 1e6*t/k/n}')
    else
        R[$label.up_us_req]=-
    fi
}

fixed_rate() { # label url body rate conns [header] [duration]
    local label=$1 url=$2 body=$3 rate=$4 conns=$5 header=${6:-} dur=${7:-$DUR}
    log "$label: loadgen ${rate} req/s for ${dur}s (1 s warm-up, $conns connections)"
    local hdr=()
    [ -n "$header" ] && hdr=(--header "$header")
    local line
    line=$($ON_LG "$EX/loadgen" --url "$url" --body "$body" --rate "$rate" \
        --connections "$conns" --duration "$dur" --warmup 1 --label "$label" "${hdr[@]}" |
        tee "$RUN/loadgen-$label.txt" | grep '^LOADGEN ')
    for k in achieved_rps p50_ms p99_ms p999_ms max_ms ttfb_p50_ms ttfb_p99_ms gap_p50_ms gap_p99_ms non2xx errors timeouts max_lag_ms; do
        R[$label.fr_$k]=$(kv $k "$line")
    done
}

# Background load: how busy each CPU is while none of our load runs (other processes: a
# build or test run elsewhere on the machine skews every number). Waits up to
# $BENCH_QUIET_WAIT s (60) for a quiet second (both CPUs under 15 % busy).
background() { # -> "cpu0 cpu1" busy % over 1 s
    local a b
    a=$(cpu_stat)
    sleep 1
    b=$(cpu_stat)
    echo "$(busy_pct "$a" "$b" 0) $(busy_pct "$a" "$b" 1)"
}
QUIET_DEADLINE=$(($(date +%s) + ${BENCH_QUIET_WAIT:-60}))
while :; do
    read -r BG_CPU0 BG_CPU1 <<<"$(background)"
    if [ "$BG_CPU0" -lt 15 ] && [ "$BG_CPU1" -lt 15 ]; then break; fi
    if [ "$(date +%s)" -ge "$QUIET_DEADLINE" ]; then
        log "WARNING: the machine is busy (cpu0 $BG_CPU0%, cpu1 $BG_CPU1%): results will be skewed"
        break
    fi
    log "machine busy (cpu0 $BG_CPU0%, cpu1 $BG_CPU1%), waiting for a quiet second"
done
BACKGROUND="before the runs cpu0 ${BG_CPU0}%, cpu1 ${BG_CPU1}%"

# --- runs ---------------------------------------------------------------------------------------
DIRECT_URL=http://127.0.0.1:$DIRECT_PORT$CHAT_PATH
PASS_URL=http://127.0.0.1:$PASS_PORT$CHAT_PATH
GW_URL=http://127.0.0.1:$GW_PORT$(GW_PATH)

saturate direct "$DIRECT_URL" "$BODY_1K" "$CONNS" "$DIRECT_PID"
fixed_rate direct "$DIRECT_URL" "$BODY_1K" "$RATE" 16
# The 1 KiB passthrough/gateway comparison runs in $ROUNDS interleaved rounds, each
# ordering the two the other way round from the last, and the summary takes the median of
# the rounds: on a shared VM one 8 s run of either can be off by 20 % or more (CPU steal),
# and interleaving spreads that over both. Round 1's labels are the table's rows.
round_label() { # target round -> label
    if [ "$2" = 1 ]; then echo "$1"; else echo "$1.r$2"; fi
}
for ((r = 1; r <= ROUNDS; r++)); do
    PT=$(round_label passthrough $r)
    GWL=$(round_label gateway $r)
    if ((r % 2)); then order="pass gw"; else order="gw pass"; fi
    for who in $order; do
        if [ $who = pass ]; then
            saturate "$PT" "$PASS_URL" "$BODY_1K" "$CONNS" "$PASS_PID"
        else
            saturate "$GWL" "$GW_URL" "$BODY_1K" "$CONNS" "$GW_PID"
        fi
    done
    for who in $order; do
        if [ $who = pass ]; then
            fixed_rate "$PT" "$PASS_URL" "$BODY_1K" "$RATE" 16
        else
            fixed_rate "$GWL" "$GW_URL" "$BODY_1K" "$RATE" 16
        fi
    done
done

saturate passthrough-1m "$PASS_URL" "$BODY_1M" "$CONNS_1M" "$PASS_PID"
fixed_rate passthrough-1m "$PASS_URL" "$BODY_1M" "$RATE_1M" 16
saturate gateway-1m "$GW_URL" "$BODY_1M" "$CONNS_1M" "$GW_PID"
fixed_rate gateway-1m "$GW_URL" "$BODY_1M" "$RATE_1M" 16

SSE_DUR=4
fixed_rate direct-sse "$DIRECT_URL" "$BODY_1K" "$SSE_RATE" 32 "x-mock: sse" $SSE_DUR
fixed_rate passthrough-sse "$PASS_URL" "$BODY_1K" "$SSE_RATE" 32 "x-mock: sse" $SSE_DUR
fixed_rate gateway-sse "$GW_URL" "$BODY_1K" "$SSE_RATE" 32 "x-mock: sse" $SSE_DUR

GW_ROLLOUTS=$(curl -s "http://127.0.0.1:$GW_PORT/api/prompt-learning/online/gepa/sessions/$SESSION" |
    grep -o '"rollout_count":[0-9]*' | head -1 | cut -d: -f2)
GW_RSS_KB=$(awk '/^VmRSS/{print $2}' "/proc/$GW_PID/status")
GW_LOG_LINES=$(wc -l <"$RUN/gateway.log")
GW_LOG_BYTES=$(wc -c <"$RUN/gateway.log")
# Errors the gateway logged (a store that could not write, a full disk): a run with any
# is suspect, as a writer that fails its batches also spends less CPU.
GW_LOG_ERRORS=$(grep -c '"level":"ERROR"' "$RUN/gateway.log" || true)
kill -TERM "$GW_PID" 2>/dev/null || true

# Same gateway without the per-request access log (RUST_LOG=warn), saturation only.
start_gateway gateway-warnlog warn
saturate gateway-warnlog "http://127.0.0.1:$GW_PORT$(GW_PATH)" "$BODY_1K" "$CONNS" "$GW_PID"
kill -TERM "$GW_PID" 2>/dev/null || true
sleep 0.5

# The 1 KiB comparison once more as a concurrent A/B (benches/ab.sh): both proxies serve at
# the same time on CPU 1, so the VM's noise hits both alike and the CPU-per-request ratio
# comes out within about 3%, where the sequential rounds above vary by 20%.
log "concurrent A/B, passthrough vs gateway ($ROUNDS rounds of ${DUR}s)"
BENCH_SKIP_BUILD=1 BENCH_DURATION=$DUR "$ROOT/benches/ab.sh" passthrough gateway "$ROUNDS" \
    >"$RUN/ab.txt" 2>"$RUN/ab.log" || { tail -5 "$RUN/ab.log" >&2; echo "(benches/ab.sh failed)" >"$RUN/ab.txt"; }
T_END=$(date +%s)
read -r BG_CPU0 BG_CPU1 <<<"$(background)"
BACKGROUND="$BACKGROUND; after cpu0 ${BG_CPU0}%, cpu1 ${BG_CPU1}%"
if [ "$BG_CPU0" -ge 15 ] || [ "$BG_CPU1" -ge 15 ]; then
    BACKGROUND="$BACKGROUND -- WARNING: other work ran on the machine, results are skewed"
fi

# --- report -------------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b+0 == 0) print "-"; else printf "%.2f", a/b }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END{ if (NR % 2) print v[(NR+1)/2]; else printf "%.3f\n", (v[NR/2]+v[NR/2+1])/2 }'; }
{
    echo "gepa-gateway load benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ), git $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo '+dirty')"
    echo "machine: nproc=$(nproc), $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
    echo "tools: $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}'); loadgen = benches/load/loadgen.rs (hyper $(grep -A1 '^name = "hyper"$' Cargo.lock | sed -n 's/version = "\(.*\)"/\1/p'), tokio current-thread); $(rustc --version)"
    echo "layout: $LAYOUT"
    echo "background CPU (other processes, 1 s samples; should be ~0): $BACKGROUND"
    echo "servers: gateway and passthrough 2 Pingora worker threads each; gateway logging as shipped (RUST_LOG unset = info, one access-log line per request, stderr to a file)"
    echo "saturation: wrk -t1, ${DUR}s after 2s warm-up, ${CONNS} conns (1 KiB) / ${CONNS_1M} conns (1 MiB); fixed rate: loadgen, 16 conns, 1s warm-up + ${DUR}s, latency to last body byte, coordinated-omission corrected"
    echo "bodies: 1 KiB = $(wc -c <"$BODY_1K") B, 1 MiB = $(wc -c <"$BODY_1M") B chat JSON (system + user message); mock response: $(wc -c <"$RUN/check-direct.out") B JSON, keep-alive"
    echo
    printf '%-16s %-4s | %9s %7s %7s %4s %4s %4s %5s %6s %6s | %5s %7s %7s %7s %7s %6s\n' \
        target body "sat req/s" "p50 ms" "p99 ms" errs cpu0 cpu1 other "proxy" "mock" \
        rate achieved "p50 ms" "p99 ms" "p99.9" errs
    row() { # label name body rate
        local l=$1 proxy_us mock_us
        if [ "${R[$l.up_us_req]}" = - ]; then
            proxy_us=-
            mock_us=${R[$l.us_req]}
        else
            proxy_us=${R[$l.us_req]}
            mock_us=${R[$l.up_us_req]}
        fi
        printf '%-16s %-4s | %9.0f %7s %7s %4s %4s %4s %5s %6s %6s | ' "$2" "$3" "${R[$l.rps]}" \
            "${R[$l.sat_p50]}" "${R[$l.sat_p99]}" "$((R[$l.errs] + R[$l.status_err]))" \
            "${R[$l.cpu0]}" "${R[$l.cpu1]}" "${R[$l.other]}" "$proxy_us" "$mock_us"
        if [ -n "${R[$l.fr_p50_ms]:-}" ]; then
            printf '%5s %7.0f %7s %7s %7s %6s\n' "$4" "${R[$l.fr_achieved_rps]}" "${R[$l.fr_p50_ms]}" \
                "${R[$l.fr_p99_ms]}" "${R[$l.fr_p999_ms]}" "$((R[$l.fr_non2xx] + R[$l.fr_errors] + R[$l.fr_timeouts]))"
        else
            printf '%5s\n' "-"
        fi
    }
    echo "                      | -------------------- saturation (wrk, closed loop) -------------------- | ------ fixed rate (loadgen, open loop) -------"
    row direct direct 1KiB "$RATE"
    row passthrough passthrough 1KiB "$RATE"
    row gateway gateway 1KiB "$RATE"
    row gateway-warnlog "gateway,warnlog" 1KiB -
    row passthrough-1m passthrough 1MiB "$RATE_1M"
    row gateway-1m gateway 1MiB "$RATE_1M"
    echo "columns: saturation p50/p99 = wrk's closed-loop latency at saturation; errs = socket errors + timeouts + HTTP >= 400"
    echo "  (fixed rate: + non-2xx); cpu0/cpu1 = utilisation of each CPU during the wrk run (%); other = busy CPU (% of one"
    echo "  core) not accounted to wrk, the mock or the proxy: loopback softirq work, and other processes (>10: suspect the row);"
    echo "  proxy / mock = CPU time (user+sys, all threads) the proxy under test / the mock used per request, in microseconds;"
    echo "  rate and achieved in req/s"
    echo
    echo "1 KiB, passthrough vs gateway in $ROUNDS interleaved rounds (round 1 is the table's rows):"
    printf '  %5s | %9s %9s %5s | %7s %7s %5s | %-13s %-13s %9s | %s\n' round "pass req/s" "gw req/s" ratio \
        "pass us" "gw us" ratio "pass p50/p99" "gw p50/p99" "added p99" "steal pass/gw"
    RATIOS=() CPU_RATIOS=() ADDED_P50=() ADDED_P99=()
    for ((r = 1; r <= ROUNDS; r++)); do
        p=$(round_label passthrough $r) g=$(round_label gateway $r)
        tr=$(ratio "${R[$g.rps]}" "${R[$p.rps]}")
        cr=$(ratio "${R[$g.us_req]}" "${R[$p.us_req]}")
        a50=$(awk -v a="${R[$g.fr_p50_ms]}" -v b="${R[$p.fr_p50_ms]}" 'BEGIN{printf "%.3f", a-b}')
        a99=$(awk -v a="${R[$g.fr_p99_ms]}" -v b="${R[$p.fr_p99_ms]}" 'BEGIN{printf "%.3f", a-b}')
        RATIOS+=("$tr") CPU_RATIOS+=("$cr") ADDED_P50+=("$a50") ADDED_P99+=("$a99")
        printf '  %5s | %9.0f %9.0f %5s | %7s %7s %5s | %-13s %-13s %9s | %s/%s\n' "$r" "${R[$p.rps]}" "${R[$g.rps]}" "$tr" \
            "${R[$p.us_req]}" "${R[$g.us_req]}" "$cr" "${R[$p.fr_p50_ms]}/${R[$p.fr_p99_ms]}" \
            "${R[$g.fr_p50_ms]}/${R[$g.fr_p99_ms]}" "$a99" "${R[$p.steal]}" "${R[$g.steal]}"
    done
    echo
    echo "  (steal: CPU time the hypervisor took from this VM during each saturation run, 1/$CLK_TCK s)"
    echo
    echo "gateway / passthrough (1 KiB: median of the $ROUNDS rounds; added = gateway minus passthrough, ms):"
    printf '  1 KiB: throughput %s, CPU per request %s, fixed-rate added p50 %s ms, added p99 %s ms\n' \
        "$(median "${RATIOS[@]}")" "$(median "${CPU_RATIOS[@]}")" "$(median "${ADDED_P50[@]}")" "$(median "${ADDED_P99[@]}")"
    printf '  1 MiB: throughput %s, CPU per request %s, fixed-rate p50 %s, p99 %s\n' \
        "$(ratio "${R[gateway-1m.rps]}" "${R[passthrough-1m.rps]}")" "$(ratio "${R[gateway-1m.us_req]}" "${R[passthrough-1m.us_req]}")" \
        "$(ratio "${R[gateway-1m.fr_p50_ms]}" "${R[passthrough-1m.fr_p50_ms]}")" "$(ratio "${R[gateway-1m.fr_p99_ms]}" "${R[passthrough-1m.fr_p99_ms]}")"
    printf '  gateway RUST_LOG=warn / as shipped (info, access log): throughput %s, CPU per request %s\n' \
        "$(ratio "${R[gateway-warnlog.rps]}" "${R[gateway.rps]}")" "$(ratio "${R[gateway-warnlog.us_req]}" "${R[gateway.us_req]}")"
    echo
    echo "1 KiB, concurrent A/B (benches/ab.sh: both at once on CPU 1, each with its own mock; 32 conns each):"
    sed 's/^/  /' "$RUN/ab.txt"
    echo
    echo "SSE (x-mock: sse: 5 events 10 ms apart), ${SSE_RATE} req/s, 32 conns, ${SSE_DUR}s:"
    for l in direct-sse passthrough-sse gateway-sse; do
        printf '  %-16s first body byte p50 %s ms p99 %s ms; between events p50 %s ms p99 %s ms; complete p50 %s ms p99 %s ms; non-2xx/errors %s\n' "$l" \
            "${R[$l.fr_ttfb_p50_ms]}" "${R[$l.fr_ttfb_p99_ms]}" "${R[$l.fr_gap_p50_ms]}" "${R[$l.fr_gap_p99_ms]}" "${R[$l.fr_p50_ms]}" "${R[$l.fr_p99_ms]}" \
            "$((R[$l.fr_non2xx] + R[$l.fr_errors] + R[$l.fr_timeouts]))"
    done
    echo
    echo "gateway after the run: session rollout_count=${GW_ROLLOUTS:-?}, RSS $((GW_RSS_KB / 1024)) MiB, access log ${GW_LOG_LINES} lines / $((GW_LOG_BYTES / 1024)) KiB, ERROR lines logged ${GW_LOG_ERRORS} (should be 0)"
    echo "CPU steal during the wrk runs (ticks of 1/$CLK_TCK s): direct ${R[direct.steal]}, passthrough ${R[passthrough.steal]}, gateway ${R[gateway.steal]}, passthrough-1m ${R[passthrough-1m.steal]}, gateway-1m ${R[gateway-1m.steal]}"
    echo "max loadgen schedule lag (ms): direct ${R[direct.fr_max_lag_ms]}, passthrough ${R[passthrough.fr_max_lag_ms]}, gateway ${R[gateway.fr_max_lag_ms]}, passthrough-1m ${R[passthrough-1m.fr_max_lag_ms]}, gateway-1m ${R[gateway-1m.fr_max_lag_ms]}"
    echo "time: build $((T_BUILT - T0))s, measurements $((T_END - T_BUILT))s; raw output in ${RUN#"$ROOT"/}"
} | tee "$REPORT"
log "report written to ${REPORT#"$ROOT"/}"
