#!/usr/bin/env bash
# Reserve-then-settle pairs (issue 29) against pgbench doing the same work
# in SQL, in one sitting: 64 callers over 1,000 keys with credits, each pair
# a VerifyApiKey with `reserve` (cost 50) and a SettleReservation at a real
# cost from 0 to 100. pgbench runs the same as two transactions per pair
# (an UPDATE of the balance plus an INSERT of the reservation; then an
# UPDATE of the reservation plus an UPDATE of the balance), at 8 and 64
# clients; the ratio is against the better of the two. Also VerifyApiKey on
# a key without credits, to show that path keeps its rate. ROUNDS times.
#
#   cargo build --release --bins
#   benches/reserve_settle.sh
#
# Needs PostgreSQL at 127.0.0.1:5432 (user postgres, trust), pgbench; port
# 50075 free. Writes target/bench/reserve-settle.jsonl.
set -euo pipefail
# The console listens too (as by default), on a free port: servers run side by side here.
export CONSOLE_LISTEN_ADDR=${CONSOLE_LISTEN_ADDR:-127.0.0.1:0}
cd "$(dirname "$0")/.."
PG=postgres://postgres@127.0.0.1:5432
ADDR=127.0.0.1:50075
SERVER=${SERVER:-target/release/chatbot-backend}
LOADGEN=target/release/loadgen
DURATION=${DURATION:-10}
mkdir -p target/bench
OUT=target/bench/reserve-settle.jsonl
: >$OUT

psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS pgbench_reserve" -c "CREATE DATABASE pgbench_reserve" >/dev/null
psql "$PG/pgbench_reserve" -q >/dev/null <<'SQL'
CREATE TABLE credits (id int PRIMARY KEY, remaining bigint NOT NULL);
INSERT INTO credits SELECT i, 1000000000000 FROM generate_series(1, 1000) i;
CREATE TABLE reservations (
    token bytea PRIMARY KEY,
    key_id int NOT NULL REFERENCES credits (id),
    reserved bigint NOT NULL,
    state text NOT NULL DEFAULT 'open',
    charged bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    finished_at timestamptz
);
CREATE INDEX ON reservations (key_id);
CREATE INDEX ON reservations (expires_at) WHERE state = 'open';
SQL
PAIR_SQL=target/bench/reserve-settle.sql
cat >"$PAIR_SQL" <<'SQL'
\set id random(1, 1000)
\set actual random(0, 100)
BEGIN;
UPDATE credits SET remaining = remaining - 50 WHERE id = :id AND remaining >= 50;
INSERT INTO reservations (token, key_id, reserved, expires_at) VALUES (sha256(random()::text::bytea), :id, 50, now() + interval '10 minutes') RETURNING token AS tok \gset
END;
BEGIN;
UPDATE reservations SET state = 'settled', charged = :actual, finished_at = now() WHERE token = :tok AND state = 'open';
UPDATE credits SET remaining = remaining + 50 - :actual WHERE id = :id;
END;
SQL

psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS bench_reserve WITH (FORCE)" >/dev/null
DATABASE_URL=$PG/bench_reserve $SERVER migrate >/dev/null
export LOG_FORMAT=json RUST_LOG=warn RATE_LIMIT_PER_USER=0 RATE_LIMIT_PER_ADDRESS=0 RATE_LIMIT_PER_API_KEY=0 \
  SECRET_KEY=benchmark-secret-key-0123456789abcdef SHUTDOWN_DRAIN_DELAY_SECS=0
DATABASE_URL=$PG/bench_reserve LISTEN_ADDR=$ADDR $SERVER serve >target/bench/reserve-server.log 2>&1 &
SERVER_PID=$!
trap 'kill $SERVER_PID 2>/dev/null || true' EXIT
sleep 4

labelled() { # label, JSON line
  python3 -c "import json,sys; r=json.loads(sys.argv[1]); r['label']=sys.argv[2]; print(json.dumps(r))" "$2" "$1" | tee -a $OUT
}
for round in $(seq 1 "${ROUNDS:-2}"); do
  # This machine's PostgreSQL runs with autovacuum off; without it every
  # settled reservation's dead row version stays, and later rounds measured
  # the bloat (ours fell to half in four runs). Both sides are vacuumed
  # between rounds, as autovacuum would.
  psql "$PG/bench_reserve" -qc "VACUUM ANALYZE" && psql "$PG/pgbench_reserve" -qc "VACUUM ANALYZE"
  for clients in 8 64; do
    tps=$(pgbench -n -f "$PAIR_SQL" -M prepared -c "$clients" -j 2 -T "$DURATION" -h 127.0.0.1 -U postgres pgbench_reserve 2>/dev/null \
      | awk '/^tps/ {print $3; exit}')
    echo "{\"label\":\"pgbench reserve+settle pairs, $clients clients, r$round\",\"rpc\":\"pgbench-reserve-settle\",\"concurrency\":$clients,\"throughput_rps\":$tps}" | tee -a $OUT
  done
  for rpc in reserve-and-settle verify-api-key-valid; do
    line=$($LOADGEN --addr "http://$ADDR" --rpc $rpc --concurrency 64 --duration-secs "$DURATION" --json 2>/dev/null | tail -n1)
    labelled "$rpc, 64 callers, r$round" "$line"
  done
done
psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS pgbench_reserve" >/dev/null
