#!/usr/bin/env bash
# Reproduces BENCHMARKS.md in one sitting: pgbench's point-select rate, then
# every benchmarked RPC through the load generator at 8 and 64 callers
# against a release build on PostgreSQL, the cheap RPCs again under a Login
# flood, the server's peak RSS, CPU per request and start-up time.
#
#   benches/run.sh                 # writes target/bench/results.jsonl and prints a table
#   DURATION=5 benches/run.sh      # shorter runs
#
# Needs PostgreSQL at 127.0.0.1:5432 (user postgres, trust), pgbench and
# python3. Builds with `cargo build --release --bins`. Port 50061 must be free.
set -euo pipefail
# The console listens too (as by default), on a free port: servers run side by side here.
export CONSOLE_LISTEN_ADDR=${CONSOLE_LISTEN_ADDR:-127.0.0.1:0}
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
ADDR=127.0.0.1:50061
PG=postgres://postgres@127.0.0.1:5432
BENCH_DB=chatbot_bench
OUT=target/bench
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"

cargo build --release --bins
SERVER=target/release/chatbot-backend
LOADGEN=target/release/loadgen

echo "== machine"
nproc
grep -m1 'model name' /proc/cpuinfo || true
free -g | head -2

echo "== pgbench -S -M prepared (scale 10), same machine, same sitting"
psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS pgbench_cb" -c "CREATE DATABASE pgbench_cb" >/dev/null
pgbench -i -q -s 10 -h 127.0.0.1 -U postgres pgbench_cb >/dev/null 2>&1
for clients in 8 64; do
    tps=$(pgbench -S -M prepared -c "$clients" -j 2 -T "$DURATION" -h 127.0.0.1 -U postgres pgbench_cb 2>/dev/null \
        | awk '/^tps/ {print $3; exit}')
    echo "{\"rpc\":\"pgbench\",\"concurrency\":$clients,\"throughput_rps\":$tps}" | tee -a "$RESULTS"
done

echo "== pgbench: the single-row spend VerifyApiKey does per call, over 1,000 rows"
psql "$PG/pgbench_cb" -qc "CREATE TABLE credits (id int PRIMARY KEY, remaining bigint NOT NULL)" \
    -c "INSERT INTO credits SELECT i, 1000000000000 FROM generate_series(1, 1000) i" >/dev/null
SPEND_SQL="$OUT/spend.sql"
printf '%s\n' '\set id random(1, 1000)' \
    'UPDATE credits SET remaining = remaining - 1 WHERE id = :id AND remaining >= 1;' >"$SPEND_SQL"
for clients in 8 64; do
    tps=$(pgbench -n -f "$SPEND_SQL" -M prepared -c "$clients" -j 2 -T "$DURATION" -h 127.0.0.1 -U postgres pgbench_cb 2>/dev/null \
        | awk '/^tps/ {print $3; exit}')
    echo "{\"rpc\":\"pgbench-spend-update\",\"concurrency\":$clients,\"throughput_rps\":$tps}" | tee -a "$RESULTS"
done

echo "== server (release, PostgreSQL $BENCH_DB, rate limits and login budgets out of the way)"
psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $BENCH_DB WITH (FORCE)" >/dev/null
# Migrate first, so the start-up time below excludes migrations.
DATABASE_URL="$PG/$BENCH_DB" "$SERVER" migrate >/dev/null
export DATABASE_URL="$PG/$BENCH_DB" LISTEN_ADDR="$ADDR" LOG_FORMAT=json RUST_LOG=warn,chatbot_backend::startup=info \
    RATE_LIMIT_PER_USER=0 RATE_LIMIT_PER_ADDRESS=0 RATE_LIMIT_PER_API_KEY=0 \
    LOGIN_MAX_FAILURES_PER_EMAIL=1000000 LOGIN_MAX_FAILURES_PER_ADDRESS=1000000 \
    SECRET_KEY=benchmark-secret-key-0123456789abcdef SHUTDOWN_DRAIN_DELAY_SECS=0
start_ns=$(date +%s%N)
"$SERVER" serve >"$OUT/server.log" 2>&1 &
SERVER_PID=$!
trap 'kill $SERVER_PID 2>/dev/null || true' EXIT
for _ in $(seq 500); do
    grep -q '"serving gRPC"' "$OUT/server.log" 2>/dev/null && break
    sleep 0.01
done
ready_ns=$(date +%s%N)
startup_ms=$(( (ready_ns - start_ns) / 1000000 ))
echo "{\"metric\":\"startup_ms\",\"value\":$startup_ms}" | tee -a "$RESULTS"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }
TICKS=$(getconf CLK_TCK)

run() { # rpc concurrency [label]
    local before after
    before=$(cpu_ticks)
    line=$("$LOADGEN" --addr "http://$ADDR" --rpc "$1" --concurrency "$2" \
        --duration-secs "$DURATION" --warmup-secs 1 --json 2>/dev/null | tail -n1)
    after=$(cpu_ticks)
    python3 - "$line" "$before" "$after" "$TICKS" "${3:-}" <<'PY' | tee -a "$RESULTS"
import json, sys
r = json.loads(sys.argv[1]); before, after, hz = map(int, sys.argv[2:5])
# CPU over the whole run including warm-up and setup: an upper bound.
r["server_cpu_us_per_request"] = round((after - before) / hz * 1e6 / max(r["requests"], 1), 1)
if sys.argv[5]: r["label"] = sys.argv[5]
print(json.dumps(r))
PY
}

echo "== RPCs"
for rpc in get-chatbot list-chatbots verify-api-key-valid verify-api-key-restricted ext-authz-check verify-api-key-invalid verify-api-key-invalid-fresh \
    verify-api-key-rate-limited verify-api-key-credits create-chatbot login; do
    for c in 8 64; do
        run "$rpc" "$c"
    done
done

echo "== cheap RPCs under a Login flood: ten times the logins the server completes"
# Offered open loop at ten times the Login rate measured above (64 callers,
# bound by the hashing threads), so the bounded hash queue refuses most of
# it; the flood's own summary (how many were refused) is a row too.
login_rps=$(python3 -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print([r for r in rows if r.get("rpc") == "login" and r["concurrency"] == 64][-1]["ok_throughput_rps"])
' "$RESULTS")
flood_rate=$(python3 -c "print(max(1.0, round(10 * $login_rps, 1)))")
FLOOD_OUT="$OUT/login-flood.json"
"$LOADGEN" --addr "http://$ADDR" --rpc login --concurrency 512 --rate "$flood_rate" \
    --warmup-secs 3 --duration-secs $((2 * DURATION + 6)) --json 2>/dev/null | tail -n1 >"$FLOOD_OUT" &
FLOOD=$!
sleep 4
run get-chatbot 64 "under login flood"
run verify-api-key-valid 64 "under login flood"
wait $FLOOD || true
python3 - "$FLOOD_OUT" "$flood_rate" <<'PY' | tee -a "$RESULTS"
import json, sys
r = json.loads(open(sys.argv[1]).read())
r["label"] = f"the flood, offered {float(sys.argv[2]):g}/s"
print(json.dumps(r))
PY

peak_kb=$(awk '/VmHWM/ {print $2}' "/proc/$SERVER_PID/status")
echo "{\"metric\":\"peak_rss_kb\",\"value\":$peak_kb}" | tee -a "$RESULTS"
kill -TERM $SERVER_PID
wait $SERVER_PID || true

echo "== a key's own rate limit counted in Redis (REDIS_URL), same database"
REDIS_DB=${REDIS_DB:-15}
redis-cli -n "$REDIS_DB" flushdb >/dev/null
REDIS_URL="redis://127.0.0.1:6379/$REDIS_DB" REDIS_KEY_PREFIX=bench: "$SERVER" serve >"$OUT/server-redis.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 500); do
    grep -q '"serving gRPC"' "$OUT/server-redis.log" 2>/dev/null && break
    sleep 0.01
done
for c in 8 64; do
    run verify-api-key-rate-limited "$c" "redis"
done
kill -TERM $SERVER_PID
wait $SERVER_PID || true
redis-cli -n "$REDIS_DB" flushdb >/dev/null
trap - EXIT
psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS pgbench_cb" >/dev/null
echo "results in $RESULTS"
