# Shared by benches/load.sh, benches/store.sh, benches/instructions.sh and benches/ab.sh:
# sourced, not run. The caller sets ROOT (the repository) and RUN (this run's directory)
# and defines `log`.

# Builds the gateway and the benchmark helpers (Cargo examples) in the release profile,
# unless BENCH_SKIP_BUILD=1. Sets BIN and EX.
build_release() {
    if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
        log "cargo build --release --bin gepa-gateway --examples"
        cargo build --release --bin gepa-gateway --examples 2>"$RUN/build.log" ||
            { tail -30 "$RUN/build.log" >&2; exit 1; }
    fi
    BIN=$ROOT/target/release
    EX=$BIN/examples
}

# Exits, naming it, if one of the commands is missing; $1 names the Debian packages that
# provide them.
require_tools() { # packages command...
    local packages=$1 t
    shift
    for t in "$@"; do
        command -v "$t" >/dev/null || { echo "$t is missing (apt-get install -y $packages)" >&2; exit 1; }
    done
}

# Prints a TCP port that is free on 127.0.0.1 now.
free_port() {
    if command -v python3 >/dev/null; then
        python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
        return
    fi
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
    done
}

# Waits until something answers HTTP on $1 (host:port; any status). Exits the script
# after 10 s.
wait_http() {
    for _ in $(seq 200); do
        if curl -s -o /dev/null --max-time 1 "http://$1/healthz"; then return 0; fi
        sleep 0.05
    done
    echo "nothing answers on $1" >&2
    exit 1
}

# Waits until the gateway on $1 (host:port) answers /readyz with 200: it answers 503 on
# its state routes until the store is restored. Exits the script after $2 seconds (20).
wait_ready() {
    for _ in $(seq $((${2:-20} * 20))); do
        curl -sf -o /dev/null --max-time 1 "http://$1/readyz" && return 0
        sleep 0.05
    done
    echo "nothing ready on $1" >&2
    exit 1
}

# A benchmark gateway's config on stdout: conf/gateway.yaml's defaults except what a
# benchmark must set. The admin token variable is unset (it is removed from the
# environment when the gateway starts), so loopback clients may create sessions; the
# metrics listener is off, so two gateways never meet on its port.
gateway_yaml() { # port dir upstream-port store-backend
    cat <<EOF
version: 1
threads: 2
pid_file: $2/gw.pid
upgrade_sock: $2/gw-upgrade.sock
grace_period_seconds: 0
graceful_shutdown_timeout_seconds: 1
gateway:
  listen: "127.0.0.1:$1"
  public_url: "http://127.0.0.1:$1"
  upstream:
    url: "http://127.0.0.1:$3/v1"
    connect_timeout_ms: 2000
    read_timeout_s: 30
  admin:
    token_env: "GEPA_BENCH_ADMIN_TOKEN_UNSET"
  metrics:
    listen: ""
  storage:
    backend: $4
    path: "$2/gepa.db"
EOF
}

# Creates a session on the gateway at $1 (host:port) and prints its id.
create_session() {
    local resp id
    resp=$(curl -s -X POST "http://$1/api/prompt-learning/online/gepa/sessions" \
        -H 'content-type: application/json' \
        -d '{"config_body":{"prompt_learning":{"algorithm":"gepa","gepa":{"mode":"online"},"initial_prompt":{"messages":[{"role":"system","pattern":"You are a concise, friendly support assistant for a retail bank. Answer in at most three sentences."}]}}}}')
    id=$(printf '%s' "$resp" | grep -o '"session_id":"[^"]*"' | head -1 | cut -d'"' -f4)
    [ -n "$id" ] || { echo "session creation failed: $resp" >&2; exit 1; }
    echo "$id"
}

# Writes a chat body (system + user message) of exactly $1 bytes to $2.
make_body() { # total-bytes file
    local pre='{"model":"gpt-4.1-mini","temperature":0.2,"messages":[{"role":"system","content":"You are a helpful support assistant for a retail bank. Be brief and polite."},{"role":"user","content":"'
    local post='"}]}'
    local fill=$(($1 - ${#pre} - ${#post}))
    {
        printf '%s' "$pre"
        # (yes dies of SIGPIPE when head has enough: not an error here)
        (set +o pipefail; yes 'When will my new debit card arrive, and can I use it abroad? ' | tr -d '\n' | head -c "$fill")
        printf '%s' "$post"
    } >"$2"
}
