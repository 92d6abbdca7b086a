#!/usr/bin/env bash
# Where one RPC's CPU goes: the server's, the load generator's and
# PostgreSQL's (every postgres process) CPU per request, read from /proc
# over 5 s in the middle of a loadgen run at 64 callers, and how idle the
# machine was. One fresh server and database per run.
#
#   cargo build --release --bins
#   RPC=verify-api-key-credits benches/cpu_split.sh
#   SERVER=/tmp/other-build/chatbot-backend RPC=list-chatbots benches/cpu_split.sh
#
# SETUP is the seconds loadgen needs before its load starts (creating 1,000
# keys for credit spends takes about 6). Needs PostgreSQL at 127.0.0.1:5432
# (user postgres, trust) on this machine; port 50077 free.
set -euo pipefail
cd "$(dirname "$0")/.."
PG=postgres://postgres@127.0.0.1:5432
SERVER=${SERVER:-target/release/chatbot-backend}
LOADGEN=${LOADGEN:-target/release/loadgen}
RPC=${RPC:?name a loadgen --rpc mode}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS cpu_split WITH (FORCE)" >/dev/null 2>&1
DATABASE_URL=$PG/cpu_split "$SERVER" migrate >/dev/null
DATABASE_URL=$PG/cpu_split LISTEN_ADDR=127.0.0.1:50077 CONSOLE_LISTEN_ADDR=127.0.0.1:0 \
    LOG_FORMAT=json RUST_LOG=warn RATE_LIMIT_PER_USER=0 RATE_LIMIT_PER_ADDRESS=0 \
    RATE_LIMIT_PER_API_KEY=0 SECRET_KEY=benchmark-secret-key-0123456789abcdef \
    SHUTDOWN_DRAIN_DELAY_SECS=0 "$SERVER" serve >"$WORK/server.log" 2>&1 &
server=$!
sleep 2
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
postgres_ticks() {
    local total=0 pid
    for pid in $(pgrep -x postgres); do total=$((total + $(ticks "$pid"))); done
    echo "$total"
}
idle_ticks() { awk '/^cpu / {print $5}' /proc/stat; }
"$LOADGEN" --addr http://127.0.0.1:50077 --rpc "$RPC" --concurrency 64 \
    --duration-secs "${DURATION:-10}" --warmup-secs 1 --json 2>/dev/null | tail -n1 >"$WORK/loadgen.json" &
loadgen=$!
sleep "${SETUP:-4}"
loadgen_pid=$(pgrep -f "loadgen --addr http://127.0.0.1:50077" | head -n1)
s0=$(ticks "$server") l0=$(ticks "$loadgen_pid") p0=$(postgres_ticks) i0=$(idle_ticks) t0=$(date +%s.%N)
sleep 5
s1=$(ticks "$server") l1=$(ticks "$loadgen_pid") p1=$(postgres_ticks) i1=$(idle_ticks) t1=$(date +%s.%N)
wait "$loadgen"
kill "$server"
wait "$server" 2>/dev/null || true
python3 -c 'import json, sys
r = json.load(open(sys.argv[1]))
server, loadgen, postgres, idle = (int(x) for x in sys.argv[2:6])
seconds, hz, cores = float(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8])
requests = r["throughput_rps"] * seconds
per = lambda t: round(t / hz * 1e6 / requests, 1)
print(json.dumps({"rpc": r["rpc"], "throughput_rps": r["throughput_rps"],
                  "server_cpu_us": per(server), "loadgen_cpu_us": per(loadgen),
                  "postgres_cpu_us": per(postgres),
                  "idle_percent": round(idle / hz / seconds / cores * 100)}))' \
    "$WORK/loadgen.json" $((s1 - s0)) $((l1 - l0)) $((p1 - p0)) $((i1 - i0)) \
    "$(python3 -c "print($t1 - $t0)")" "$(getconf CLK_TCK)" "$(nproc)"
psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS cpu_split WITH (FORCE)" >/dev/null 2>&1
