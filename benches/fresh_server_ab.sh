#!/usr/bin/env bash
# Two builds side by side, each call mode on a fresh server and database per
# run, the builds interleaved within each round (ROUNDS, default 4) so that
# drift on a shared machine hits both alike: throughput, p99 and the
# server's CPU per request (set-up and warm-up included: an upper bound).
#
#   OLD=/tmp/before-target/release/chatbot-backend benches/fresh_server_ab.sh
#   RPCS="list-chatbots verify-api-key-credits" DURATION=5 OLD=... benches/fresh_server_ab.sh
#
# NEW defaults to this checkout's release build; RPCS to VerifyApiKey,
# ListChatbots and credit spends. Needs PostgreSQL at 127.0.0.1:5432 (user
# postgres, trust); port 50078 free. Writes target/bench/fresh-server-ab.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
PG=postgres://postgres@127.0.0.1:5432
OLD=${OLD:?name the earlier build of chatbot-backend}
NEW=${NEW:-target/release/chatbot-backend}
LOADGEN=${LOADGEN:-target/release/loadgen}
DURATION=${DURATION:-5}
mkdir -p target/bench
OUT=${OUT:-target/bench/fresh-server-ab.jsonl}
: >"$OUT"
run() { # build-label server rpc round
    psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS fresh_ab WITH (FORCE)" >/dev/null 2>&1
    DATABASE_URL=$PG/fresh_ab "$2" migrate >/dev/null
    DATABASE_URL=$PG/fresh_ab LISTEN_ADDR=127.0.0.1:50078 CONSOLE_LISTEN_ADDR=127.0.0.1:0 \
        LOG_FORMAT=json RUST_LOG=warn RATE_LIMIT_PER_USER=0 RATE_LIMIT_PER_ADDRESS=0 \
        RATE_LIMIT_PER_API_KEY=0 SECRET_KEY=benchmark-secret-key-0123456789abcdef \
        SHUTDOWN_DRAIN_DELAY_SECS=0 "$2" serve >target/bench/fresh-server-ab-server.log 2>&1 &
    local server=$!
    sleep 2
    local before after line
    before=$(awk '{print $14 + $15}' "/proc/$server/stat")
    line=$("$LOADGEN" --addr http://127.0.0.1:50078 --rpc "$3" --concurrency 64 \
        --duration-secs "$DURATION" --warmup-secs 1 --json 2>/dev/null | tail -n1)
    after=$(awk '{print $14 + $15}' "/proc/$server/stat")
    kill "$server"
    wait "$server" 2>/dev/null || true
    python3 -c 'import json, sys
r = json.loads(sys.argv[1]); before, after, hz = map(int, sys.argv[4:7])
print(json.dumps({"rpc": r["rpc"], "build": sys.argv[2], "round": int(sys.argv[3]),
                  "throughput_rps": r["throughput_rps"], "p99_ms": r["latency_ms"]["p99"],
                  "server_cpu_us_per_request": round((after - before) / hz * 1e6 / max(r["requests"], 1), 1)}))' \
        "$line" "$1" "$4" "$before" "$after" "$(getconf CLK_TCK)" | tee -a "$OUT"
}
for round in $(seq 1 "${ROUNDS:-4}"); do
    for rpc in ${RPCS:-verify-api-key-valid list-chatbots verify-api-key-credits}; do
        run before "$OLD" "$rpc" "$round"
        run after "$NEW" "$rpc" "$round"
    done
done
psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS fresh_ab WITH (FORCE)" >/dev/null
