#!/usr/bin/env bash
# VerifyApiKey spending credits (loadgen's verify-api-key-credits: 1,000 keys
# with credits, one at random per call, 64 callers) against pgbench's
# equivalent single-row spend UPDATE over 1,000 rows at 64 clients, in the
# same sitting, for each SPEND_BATCHES_IN_FLIGHT in INFLIGHTS (default "1 2
# 4"). A fresh server and database per setting.
#
#   cargo build --release --bins
#   benches/credit_spends.sh          # writes target/bench/credit-spends.jsonl
#
# Needs PostgreSQL at 127.0.0.1:5432 (user postgres, trust) and pgbench;
# port 50093 free.
set -euo pipefail
cd "$(dirname "$0")/.."
PG=postgres://postgres@127.0.0.1:5432
SERVER=${SERVER:-target/release/chatbot-backend}
DURATION=${DURATION:-10}
mkdir -p target/bench
OUT=${OUT:-target/bench/credit-spends.jsonl}
: >"$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS pgbench_spends" -c "CREATE DATABASE pgbench_spends" >/dev/null
psql "$PG/pgbench_spends" -qc "CREATE TABLE credits (id int PRIMARY KEY, remaining bigint NOT NULL)" \
    -c "INSERT INTO credits SELECT g, 1000000000 FROM generate_series(1, 1000) g" >/dev/null
printf '%s\n' '\set id random(1, 1000)' \
    'UPDATE credits SET remaining = remaining - 1 WHERE id = :id AND remaining >= 1;' >"$WORK/spend.sql"
for in_flight in ${INFLIGHTS:-1 2 4}; do
    psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS credit_spends WITH (FORCE)" >/dev/null
    DATABASE_URL=$PG/credit_spends "$SERVER" migrate >/dev/null
    DATABASE_URL=$PG/credit_spends LISTEN_ADDR=127.0.0.1:50093 CONSOLE_LISTEN_ADDR=127.0.0.1:0 \
        LOG_FORMAT=json RUST_LOG=warn RATE_LIMIT_PER_USER=0 RATE_LIMIT_PER_ADDRESS=0 \
        RATE_LIMIT_PER_API_KEY=0 SECRET_KEY=benchmark-secret-key-0123456789abcdef \
        SHUTDOWN_DRAIN_DELAY_SECS=0 SPEND_BATCHES_IN_FLIGHT="$in_flight" \
        "$SERVER" serve >target/bench/credit-spends-server.log 2>&1 &
    server=$!
    sleep 3
    tps=$(pgbench -n -f "$WORK/spend.sql" -M prepared -c 64 -j 2 -T "$DURATION" -h 127.0.0.1 -U postgres \
        pgbench_spends 2>/dev/null | awk '/^tps/ {print $3; exit}')
    line=$(target/release/loadgen --addr http://127.0.0.1:50093 --rpc verify-api-key-credits \
        --concurrency 64 --duration-secs "$DURATION" --warmup-secs 1 --json 2>/dev/null | tail -n1)
    python3 -c 'import json, sys
r = json.loads(sys.argv[1])
print(json.dumps({"spend_batches_in_flight": int(sys.argv[2]), "pgbench_spend_update": float(sys.argv[3]),
                  "verify_credits_rps": r["throughput_rps"], "p99_ms": r["latency_ms"]["p99"],
                  "ratio": round(r["throughput_rps"] / float(sys.argv[3]), 2)}))' "$line" "$in_flight" "$tps" | tee -a "$OUT"
    kill "$server"
    wait "$server" 2>/dev/null || true
done
psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS pgbench_spends" -c "DROP DATABASE IF EXISTS credit_spends WITH (FORCE)" >/dev/null
