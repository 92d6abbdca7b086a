#!/usr/bin/env bash
# A same-sitting A/B of VerifyApiKey, Envoy's Check and GetChatbot (64
# callers) between an earlier build and this one, with pgbench -S (8 and 64
# clients) between,
# rounds (ROUNDS, default 3) interleaved so that drift on a shared machine
# hits both alike.
#
#   git worktree add /tmp/before <rev>
#   (cd /tmp/before && CARGO_TARGET_DIR=/tmp/before-target cargo build --release --bins)
#   cargo build --release --bins
#   OLD=/tmp/before-target/release/chatbot-backend benches/ab_verify_before_after.sh
#
# RPCS picks the load generator's modes (default: the three above);
# OLD_LOADGEN drives the earlier build with its own load generator, for a
# mode whose requests changed shape between the builds (e.g. the key format
# of verify-api-key-invalid).
#
# Needs PostgreSQL at 127.0.0.1:5432 (user postgres, trust) and pgbench;
# ports 50071 and 50072 free. Writes target/bench/ab.jsonl.
set -euo pipefail
# The console listens too (as by default), on a free port: servers run side by side here.
export CONSOLE_LISTEN_ADDR=${CONSOLE_LISTEN_ADDR:-127.0.0.1:0}
cd "$(dirname "$0")/.."
PG=postgres://postgres@127.0.0.1:5432
OLD=${OLD:?set OLD to the chatbot-backend binary of the earlier build}
NEW=target/release/chatbot-backend
LOADGEN=target/release/loadgen
OLD_LOADGEN=${OLD_LOADGEN:-$LOADGEN}
RPCS=${RPCS:-verify-api-key-valid ext-authz-check get-chatbot}
mkdir -p target/bench
OUT=target/bench/ab.jsonl
: > $OUT
psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS pgbench_ab" -c "CREATE DATABASE pgbench_ab" >/dev/null
pgbench -i -q -s 10 -h 127.0.0.1 -U postgres pgbench_ab >/dev/null 2>&1
for v in old new; do
  psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS ab_$v WITH (FORCE)" >/dev/null
done
export LOG_FORMAT=json RUST_LOG=warn RATE_LIMIT_PER_USER=0 RATE_LIMIT_PER_ADDRESS=0 RATE_LIMIT_PER_API_KEY=0 \
  SECRET_KEY=benchmark-secret-key-0123456789abcdef SHUTDOWN_DRAIN_DELAY_SECS=0
DATABASE_URL=$PG/ab_old LISTEN_ADDR=127.0.0.1:50071 $OLD serve > target/bench/ab-old.log 2>&1 &
P1=$!
DATABASE_URL=$PG/ab_new LISTEN_ADDR=127.0.0.1:50072 $NEW serve > target/bench/ab-new.log 2>&1 &
P2=$!
trap 'kill $P1 $P2 2>/dev/null || true' EXIT
sleep 4
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
lg() { # addr rpc label [loadgen]
  local pid=$P1
  [ "$1" = 127.0.0.1:50072 ] && pid=$P2
  local before; before=$(cpu_ticks $pid)
  line=$(${4:-$LOADGEN} --addr "http://$1" --rpc "$2" --concurrency 64 --duration-secs 10 --warmup-secs 1 --json 2>/dev/null | tail -n1)
  local after; after=$(cpu_ticks $pid)
  # Server CPU over the whole run, set-up and warm-up included: an upper bound.
  python3 -c "import json,sys; r=json.loads(sys.argv[1]); r['label']=sys.argv[2]; r['server_cpu_us_per_request']=round((int(sys.argv[4])-int(sys.argv[3]))/int(sys.argv[5])*1e6/max(r['requests'],1),1); print(json.dumps(r))" "$line" "$3" "$before" "$after" "$(getconf CLK_TCK)" | tee -a $OUT
}
for round in $(seq 1 "${ROUNDS:-3}"); do
  # Both client counts: at 64, pgbench -S swings widely on two cores, so
  # ratios divide by the better of the two.
  for clients in 8 64; do
    tps=$(pgbench -S -M prepared -c $clients -j 2 -T 10 -h 127.0.0.1 -U postgres pgbench_ab 2>/dev/null | awk '/^tps/ {print $3; exit}')
    echo "{\"rpc\":\"pgbench\",\"clients\":$clients,\"round\":$round,\"throughput_rps\":$tps}" | tee -a $OUT
  done
  for rpc in $RPCS; do
    lg 127.0.0.1:50071 "$rpc" "before r$round" "$OLD_LOADGEN"
    lg 127.0.0.1:50072 "$rpc" "after r$round"
  done
done
psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS pgbench_ab" >/dev/null
