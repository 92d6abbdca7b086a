#!/usr/bin/env bash
# Spends from organizations' balances (issue 29) against pgbench doing the
# same work in SQL, in one sitting: 64 callers over 1,000 keys without
# credits of their own on chatbots of 10 organizations with credits, each
# VerifyApiKey spending 1 from the organization of a key drawn at random
# (10 hot rows). pgbench runs the same spend as one UPDATE of one of 10
# rows per transaction, at 8 and 64 clients; the ratio is against the
# better of the two. Beside it, VerifyApiKey spending from 1,000 keys' own
# balances (the one-statement path) and pgbench -S, for scale. ROUNDS times.
#
#   cargo build --release --bins
#   benches/organization_credits.sh
#
# Needs PostgreSQL at 127.0.0.1:5432 (user postgres, trust), pgbench; port
# 50076 free. Writes target/bench/organization-credits.jsonl.
set -euo pipefail
# The console listens too (as by default), on a free port: servers run side by side here.
export CONSOLE_LISTEN_ADDR=${CONSOLE_LISTEN_ADDR:-127.0.0.1:0}
cd "$(dirname "$0")/.."
PG=postgres://postgres@127.0.0.1:5432
ADDR=127.0.0.1:50076
SERVER=${SERVER:-target/release/chatbot-backend}
LOADGEN=target/release/loadgen
DURATION=${DURATION:-10}
mkdir -p target/bench
OUT=target/bench/organization-credits.jsonl
: >$OUT

psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS pgbench_org" -c "CREATE DATABASE pgbench_org" >/dev/null
pgbench -i -q -s 10 -h 127.0.0.1 -U postgres pgbench_org >/dev/null 2>&1
psql "$PG/pgbench_org" -q >/dev/null <<'SQL'
CREATE TABLE org_credits (id int PRIMARY KEY, remaining bigint NOT NULL);
INSERT INTO org_credits SELECT i, 1000000000000 FROM generate_series(1, 10) i;
SQL
SPEND_SQL=target/bench/organization-spend.sql
cat >"$SPEND_SQL" <<'SQL'
\set id random(1, 10)
UPDATE org_credits SET remaining = remaining - 1 WHERE id = :id AND remaining >= 1;
SQL

psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS bench_org WITH (FORCE)" >/dev/null
DATABASE_URL=$PG/bench_org $SERVER migrate >/dev/null
export LOG_FORMAT=json RUST_LOG=warn RATE_LIMIT_PER_USER=0 RATE_LIMIT_PER_ADDRESS=0 RATE_LIMIT_PER_API_KEY=0 \
  SECRET_KEY=benchmark-secret-key-0123456789abcdef SHUTDOWN_DRAIN_DELAY_SECS=0
DATABASE_URL=$PG/bench_org LISTEN_ADDR=$ADDR $SERVER serve >target/bench/organization-server.log 2>&1 &
SERVER_PID=$!
trap 'kill $SERVER_PID 2>/dev/null || true' EXIT
sleep 4

labelled() { # label, JSON line
  python3 -c "import json,sys; r=json.loads(sys.argv[1]); r['label']=sys.argv[2]; print(json.dumps(r))" "$2" "$1" | tee -a $OUT
}
for round in $(seq 1 "${ROUNDS:-2}"); do
  # Autovacuum is off on this machine's PostgreSQL: both sides are
  # vacuumed between rounds, as it would.
  psql "$PG/bench_org" -qc "VACUUM ANALYZE" && psql "$PG/pgbench_org" -qc "VACUUM ANALYZE"
  for clients in 8 64; do
    for mode in select-only spend; do
      case $mode in
        select-only) args=(-S) ;;
        spend) args=(-f "$SPEND_SQL") ;;
      esac
      tps=$(pgbench -n "${args[@]}" -M prepared -c "$clients" -j 2 -T "$DURATION" -h 127.0.0.1 -U postgres pgbench_org 2>/dev/null \
        | awk '/^tps/ {print $3; exit}')
      echo "{\"label\":\"pgbench $mode, $clients clients, r$round\",\"rpc\":\"pgbench-$mode\",\"concurrency\":$clients,\"throughput_rps\":$tps}" | tee -a $OUT
    done
  done
  for rpc in verify-api-key-organization-credits verify-api-key-credits; do
    line=$($LOADGEN --addr "http://$ADDR" --rpc $rpc --concurrency 64 --duration-secs "$DURATION" --json 2>/dev/null | tail -n1)
    labelled "$rpc, 64 callers, r$round" "$line"
  done
done
psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS pgbench_org" >/dev/null
