#!/usr/bin/env bash
# Several load-generator modes against one release server, interleaved in
# rounds (ROUNDS, default 3) with pgbench -S between, so that drift on a
# shared machine hits every mode alike: the way to compare two paths of the
# same build, e.g. a restricted key against a plain one.
#
#   cargo build --release --bins
#   benches/same_server_rounds.sh verify-api-key-valid verify-api-key-restricted
#
# Needs PostgreSQL at 127.0.0.1:5432 (user postgres, trust) and pgbench;
# port 50073 free. Writes target/bench/rounds.jsonl.
set -euo pipefail
# The console listens too (as by default), on a free port: servers run side by side here.
export CONSOLE_LISTEN_ADDR=${CONSOLE_LISTEN_ADDR:-127.0.0.1:0}
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: $0 <loadgen --rpc>..." >&2; exit 2; }
PG=postgres://postgres@127.0.0.1:5432
ADDR=127.0.0.1:50073
SERVER=target/release/chatbot-backend
LOADGEN=target/release/loadgen
CONCURRENCY=${CONCURRENCY:-64}
mkdir -p target/bench
OUT=target/bench/rounds.jsonl
: >$OUT
psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS pgbench_rounds" -c "CREATE DATABASE pgbench_rounds" >/dev/null
pgbench -i -q -s 10 -h 127.0.0.1 -U postgres pgbench_rounds >/dev/null 2>&1
psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS bench_rounds WITH (FORCE)" >/dev/null
export LOG_FORMAT=json RUST_LOG=warn RATE_LIMIT_PER_USER=0 RATE_LIMIT_PER_ADDRESS=0 RATE_LIMIT_PER_API_KEY=0 \
  SECRET_KEY=benchmark-secret-key-0123456789abcdef SHUTDOWN_DRAIN_DELAY_SECS=0
DATABASE_URL=$PG/bench_rounds LISTEN_ADDR=$ADDR $SERVER serve >target/bench/rounds-server.log 2>&1 &
SERVER_PID=$!
trap 'kill $SERVER_PID 2>/dev/null || true' EXIT
sleep 4
for round in $(seq 1 "${ROUNDS:-3}"); do
  tps=$(pgbench -S -M prepared -c 64 -j 2 -T 10 -h 127.0.0.1 -U postgres pgbench_rounds 2>/dev/null | awk '/^tps/ {print $3; exit}')
  echo "{\"rpc\":\"pgbench\",\"round\":$round,\"throughput_rps\":$tps}" | tee -a $OUT
  for rpc in "$@"; do
    line=$($LOADGEN --addr "http://$ADDR" --rpc "$rpc" --concurrency "$CONCURRENCY" --duration-secs 10 --warmup-secs 1 --json 2>/dev/null | tail -n1)
    python3 -c "import json,sys; r=json.loads(sys.argv[1]); r['round']=int(sys.argv[2]); print(json.dumps(r))" "$line" "$round" | tee -a $OUT
  done
done
psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS pgbench_rounds" >/dev/null
