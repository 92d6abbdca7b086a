#!/usr/bin/env bash
# An uncached valid key's latency with and without a flood of well-formed
# keys that do not exist (issue 28): the server runs with its key cache off
# (API_KEY_CACHE_CAPACITY=0), so every valid key is looked up; the valid
# calls come at a fixed rate (RATE, default 500/s) and their p99 is compared
# unloaded and during a flood of made-up keys, both kinds (issued long ago,
# and claiming to be issued just now), ROUNDS times. The flood is offered at
# FLOOD_RATE (default 10000/s, beyond what the version before issue 28
# answered at all: 6,939/s); FLOOD_RATE=max floods with 64 callers back to
# back, which saturates the CPU the valid calls need too. Each measure lasts
# VALID_SECS (default 10); on a noisy machine, more and shorter rounds
# (ROUNDS=8 VALID_SECS=5) give a steadier median. The last line printed is
# each flood's p99 ratio to the same round's unloaded p99: the median and
# the range over the rounds.
#
# FLOOD_NICE (default 0) is the flood's load generator's CPU priority, a
# list to measure each in the same rounds (FLOOD_NICE="0 19"). On this one
# machine the generator takes its CPU from the server's two cores; in
# production the flood's senders are elsewhere, and at nice 19 the
# generator runs only on what the server, PostgreSQL and the valid calls
# leave idle.
#
#   cargo build --release --bins
#   benches/unknown_key_flood.sh
#   SERVER=/tmp/before/chatbot-backend benches/unknown_key_flood.sh   # an earlier build
#
# Needs PostgreSQL at 127.0.0.1:5432 (user postgres, trust); port 50074
# free. Writes target/bench/unknown-key-flood.jsonl.
set -euo pipefail
# The console listens too (as by default), on a free port: servers run side by side here.
export CONSOLE_LISTEN_ADDR=${CONSOLE_LISTEN_ADDR:-127.0.0.1:0}
cd "$(dirname "$0")/.."
PG=postgres://postgres@127.0.0.1:5432
ADDR=127.0.0.1:50074
SERVER=${SERVER:-target/release/chatbot-backend}
LOADGEN=target/release/loadgen
RATE=${RATE:-500}
VALID_SECS=${VALID_SECS:-10}
FLOOD_RATE=${FLOOD_RATE:-10000}
FLOOD_NICE=${FLOOD_NICE:-0}
FLOOD_PACE=(--rate "$FLOOD_RATE")
[ "$FLOOD_RATE" = max ] && FLOOD_PACE=()
mkdir -p target/bench
OUT=target/bench/unknown-key-flood.jsonl
: >$OUT
psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS bench_flood WITH (FORCE)" >/dev/null
export LOG_FORMAT=json RUST_LOG=warn RATE_LIMIT_PER_USER=0 RATE_LIMIT_PER_ADDRESS=0 RATE_LIMIT_PER_API_KEY=0 \
  SECRET_KEY=benchmark-secret-key-0123456789abcdef SHUTDOWN_DRAIN_DELAY_SECS=0 API_KEY_CACHE_CAPACITY=0
DATABASE_URL=$PG/bench_flood LISTEN_ADDR=$ADDR $SERVER serve >target/bench/flood-server.log 2>&1 &
SERVER_PID=$!
trap 'kill $SERVER_PID 2>/dev/null || true' EXIT
sleep 4
valid() { # label
  line=$($LOADGEN --addr "http://$ADDR" --rpc verify-api-key-valid --rate "$RATE" --concurrency 16 \
    --duration-secs "$VALID_SECS" --warmup-secs 1 --json 2>/dev/null | tail -n1)
  python3 -c "import json,sys; r=json.loads(sys.argv[1]); r['label']=sys.argv[2]; print(json.dumps(r))" "$line" "$1" | tee -a $OUT
}
for round in $(seq 1 "${ROUNDS:-2}"); do
  valid "uncached valid key, unloaded, r$round"
  for flood in verify-api-key-invalid verify-api-key-invalid-fresh; do
    for nice in $FLOOD_NICE; do
      # The label names the priority only when it is not the default.
      at=""; [ "$nice" = 0 ] || at=" (generator at nice $nice)"
      nice -n "$nice" $LOADGEN --addr "http://$ADDR" --rpc $flood --concurrency 64 "${FLOOD_PACE[@]}" --duration-secs $((VALID_SECS + 4)) --warmup-secs 0 --json \
        2>/dev/null | tail -n1 >target/bench/flood.json &
      FLOOD=$!
      sleep 2
      valid "uncached valid key, during a flood of $flood$at, r$round"
      wait $FLOOD
      python3 -c "import json,sys; r=json.loads(open(sys.argv[1]).read()); r['label']=sys.argv[2]; print(json.dumps(r))" \
        target/bench/flood.json "the flood of $flood$at, r$round" | tee -a $OUT
    done
  done
done
python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
unloaded = {}
ratios = {}
offered = {}
for row in rows:
    label, p99 = row["label"], row["latency_ms"]["p99"]
    round_ = label.rsplit(" r", 1)[1]
    if "unloaded" in label:
        unloaded[round_] = p99
    elif label.startswith("the flood of "):
        kind = label.split("flood of ")[1].rsplit(",", 1)[0]
        offered.setdefault(kind, []).append(row["throughput_rps"])
    elif "during" in label:
        kind = label.split("flood of ")[1].rsplit(",", 1)[0]
        ratios.setdefault(kind, []).append(p99 / unloaded[round_])
print(json.dumps({kind: {"median": round(statistics.median(r), 2), "min": round(min(r), 2),
                         "max": round(max(r), 2),
                         "flood_rps_min": round(min(offered.get(kind, [0])))}
                  for kind, r in ratios.items()}))
PY
