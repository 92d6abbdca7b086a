#!/usr/bin/env bash
# Issue 25's overload promise in one sitting: GetChatbot's and VerifyApiKey's
# p99 (64 callers) unloaded and under a Login flood offered at ten times the
# logins the server completes, three rounds interleaved so that drift on a
# shared machine hits both alike; the server's peak RSS after the floods.
#
#   cargo build --release --bins
#   benches/login_flood.sh         # writes target/bench/login-flood.jsonl
#   PASSWORD_HASH_DUTY_PERCENT=100 OUT=target/bench/duty-100.jsonl benches/login_flood.sh
#
# The server takes the server settings in the environment (such as
# PASSWORD_HASH_DUTY_PERCENT, to compare duty cycles in one sitting);
# SERVER names another build of chatbot-backend.
# Needs PostgreSQL at 127.0.0.1:5432 (user postgres, trust); port 50081 free.
set -euo pipefail
# The console listens too (as by default), on a free port: servers run side by side here.
export CONSOLE_LISTEN_ADDR=${CONSOLE_LISTEN_ADDR:-127.0.0.1:0}
cd "$(dirname "$0")/.."
PG=postgres://postgres@127.0.0.1:5432
ADDR=127.0.0.1:50081
SERVER=${SERVER:-target/release/chatbot-backend}
LOADGEN=target/release/loadgen
DURATION=${DURATION:-10}
mkdir -p target/bench
OUT=${OUT:-target/bench/login-flood.jsonl}
: >"$OUT"
psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS login_flood WITH (FORCE)" >/dev/null
DATABASE_URL=$PG/login_flood "$SERVER" migrate >/dev/null
# The login budgets out of reach: the flood is to be hashed or refused for
# overload, not refused as a password-guessing attempt.
export DATABASE_URL=$PG/login_flood LISTEN_ADDR=$ADDR LOG_FORMAT=json RUST_LOG=warn \
    RATE_LIMIT_PER_USER=0 RATE_LIMIT_PER_ADDRESS=0 RATE_LIMIT_PER_API_KEY=0 \
    LOGIN_MAX_FAILURES_PER_EMAIL=1000000 LOGIN_MAX_FAILURES_PER_ADDRESS=1000000 \
    SECRET_KEY=benchmark-secret-key-0123456789abcdef SHUTDOWN_DRAIN_DELAY_SECS=0
"$SERVER" serve >target/bench/login-flood-server.log 2>&1 &
SERVER_PID=$!
trap 'kill $SERVER_PID 2>/dev/null || true' EXIT
sleep 3

lg() { # rpc concurrency label [extra loadgen flags...]
    local rpc=$1 concurrency=$2 label=$3
    shift 3
    line=$("$LOADGEN" --addr "http://$ADDR" --rpc "$rpc" --concurrency "$concurrency" \
        --warmup-secs 1 --json "$@" 2>/dev/null | tail -n1)
    python3 -c "import json,sys; r=json.loads(sys.argv[1]); r['label']=sys.argv[2]; print(json.dumps(r))" \
        "$line" "$label" | tee -a "$OUT"
}

# What the hashing threads complete, closed loop.
lg login 64 "capacity" --duration-secs "$DURATION"
login_rps=$(tail -n1 "$OUT" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ok_throughput_rps"])')
# FLOOD_RATE offers another rate (say, the same to two settings).
flood_rate=${FLOOD_RATE:-$(python3 -c "print(max(1.0, round(10 * $login_rps, 1)))")}
echo "flood: $flood_rate logins/s offered"

for round in 1 2 3; do
    lg get-chatbot 64 "unloaded r$round" --duration-secs "$DURATION"
    lg verify-api-key-valid 64 "unloaded r$round" --duration-secs "$DURATION"
    lg login 512 "flood r$round" --rate "$flood_rate" --duration-secs $((2 * DURATION + 6)) &
    FLOOD=$!
    sleep 4
    lg get-chatbot 64 "flooded r$round" --duration-secs "$DURATION"
    lg verify-api-key-valid 64 "flooded r$round" --duration-secs "$DURATION"
    wait $FLOOD
done
peak_kb=$(awk '/VmHWM/ {print $2}' "/proc/$SERVER_PID/status")
echo "{\"metric\":\"peak_rss_kb\",\"value\":$peak_kb}" | tee -a "$OUT"

python3 - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
runs = [r for r in rows if "rpc" in r]
print("| round | GetChatbot p99 unloaded / flooded (ratio) | VerifyApiKey p99 unloaded / flooded (ratio) | flood: offered, hashed, refused per s |")
print("|---|---|---|---|")
for n in (1, 2, 3):
    def p99(rpc, kind):
        return next(r for r in runs if r["rpc"] == rpc and r["label"] == f"{kind} r{n}")["latency_ms"]["p99"]
    flood = next(r for r in runs if r["label"] == f"flood r{n}")
    refused = flood["status"].get("RESOURCE_EXHAUSTED", 0) / flood["duration_secs"]
    g0, g1 = p99("get-chatbot", "unloaded"), p99("get-chatbot", "flooded")
    v0, v1 = p99("verify-api-key-valid", "unloaded"), p99("verify-api-key-valid", "flooded")
    print(f"| {n} | {g0:.2f} / {g1:.2f} ms ({g1 / g0:.2f}x) | {v0:.2f} / {v1:.2f} ms ({v1 / v0:.2f}x) "
          f"| {flood['throughput_rps']:.0f}, {flood['ok_throughput_rps']:.1f}, {refused:.0f} |")
PY
