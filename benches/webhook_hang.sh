#!/usr/bin/env bash
# VerifyApiKey's rate while webhook endpoints hang (issue 30), in one
# sitting: 64 callers of VerifyApiKey (a cached valid key) for DURATION
# seconds, three ways, ROUNDS times:
#   quiet     nothing else happens;
#   events    another caller makes 5 changes a second in an organization
#             (each an event), no webhooks;
#   hanging   the same changes, and the organization has 16 webhooks whose
#             endpoint accepts every connection and never answers (each
#             delivery waits WEBHOOK_TIMEOUT_SECS, then retries).
# The ratio hanging / quiet is what the issue asks to stay at 1.
#
#   cargo build --release --bins
#   benches/webhook_hang.sh
#
# Needs PostgreSQL at 127.0.0.1:5432 (user postgres, trust), grpcurl and
# python3; ports 50077 and 50078 free. Writes target/bench/webhook-hang.jsonl.
set -euo pipefail
# The console listens too (as by default), on a free port: servers run side by side here.
export CONSOLE_LISTEN_ADDR=${CONSOLE_LISTEN_ADDR:-127.0.0.1:0}
cd "$(dirname "$0")/.."
PG=postgres://postgres@127.0.0.1:5432
ADDR=127.0.0.1:50077
HANG_PORT=50078
SERVER=${SERVER:-target/release/chatbot-backend}
LOADGEN=target/release/loadgen
DURATION=${DURATION:-10}
mkdir -p target/bench
OUT=target/bench/webhook-hang.jsonl
: >$OUT

# The endpoint: accepts, reads nothing, answers nothing, keeps every socket.
python3 - "$HANG_PORT" <<'PY' &
import socket, sys
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", int(sys.argv[1])))
listener.listen(1024)
held = []
while True:
    held.append(listener.accept())
PY
HANG_PID=$!

psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS bench_webhooks WITH (FORCE)" >/dev/null
DATABASE_URL=$PG/bench_webhooks $SERVER migrate >/dev/null
export LOG_FORMAT=json RUST_LOG=warn RATE_LIMIT_PER_USER=0 RATE_LIMIT_PER_ADDRESS=0 RATE_LIMIT_PER_API_KEY=0 \
  SECRET_KEY=benchmark-secret-key-0123456789abcdef SHUTDOWN_DRAIN_DELAY_SECS=0 \
  WEBHOOK_ALLOW_PRIVATE_TARGETS=true WEBHOOK_TIMEOUT_SECS=10
DATABASE_URL=$PG/bench_webhooks LISTEN_ADDR=$ADDR $SERVER serve >target/bench/webhook-server.log 2>&1 &
SERVER_PID=$!
CHANGES_PID=
trap 'kill $SERVER_PID $HANG_PID $CHANGES_PID 2>/dev/null || true' EXIT
sleep 4

call() { # method, JSON body (with $TOKEN when set)
  grpcurl -plaintext ${TOKEN:+-H "authorization: Bearer $TOKEN"} -d "$2" "$ADDR" "chatbot.v1.$1"
}
field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
EMAIL="webhooks-$(date +%s)@example.com"
call UserService/CreateUser "{\"email\":\"$EMAIL\",\"password\":\"correct-horse-battery\"}" >/dev/null
TOKEN=$(call AuthService/Login "{\"email\":\"$EMAIL\",\"password\":\"correct-horse-battery\"}" | field '["accessToken"]')
ORG=$(call OrganizationService/CreateOrganization '{"name":"hooked"}' | field '["organization"]["id"]')
BOT=$(call ChatbotService/CreateChatbot "{\"name\":\"bot\",\"llm_endpoint_url\":\"https://llm.example.com/v1\",\"organization_id\":\"$ORG\"}" \
  | field '["chatbot"]["id"]')

changes() { # 5 changes a second in the organization, until killed
  local i=0
  while true; do
    call ChatbotService/UpdateChatbot "{\"chatbot\":{\"id\":\"$BOT\",\"name\":\"bot $i\"},\"update_mask\":{\"paths\":[\"name\"]}}" >/dev/null
    i=$((i + 1))
    sleep 0.2
  done
}

labelled() { # label, JSON line
  python3 -c "import json,sys; r=json.loads(sys.argv[1]); r['label']=sys.argv[2]; print(json.dumps(r))" "$2" "$1" | tee -a $OUT
}
verify() { # label
  psql "$PG/bench_webhooks" -qc "VACUUM ANALYZE"
  line=$($LOADGEN --addr "http://$ADDR" --rpc verify-api-key-valid --concurrency 64 --duration-secs "$DURATION" --json 2>/dev/null | tail -n1)
  labelled "$1" "$line"
}

for round in $(seq 1 "${ROUNDS:-2}"); do
  verify "quiet, r$round"
  changes & CHANGES_PID=$!
  verify "events (5/s), no webhooks, r$round"
  hooks=()
  for i in $(seq 16); do
    hooks+=("$(call WebhookService/CreateWebhook \
      "{\"organization_id\":\"$ORG\",\"webhook\":{\"url\":\"http://127.0.0.1:$HANG_PORT/hook$i\"}}" \
      | field '["webhook"]["id"]')")
  done
  sleep 2 # every webhook has a delivery hanging
  verify "events (5/s), 16 hanging webhooks, r$round"
  kill $CHANGES_PID; CHANGES_PID=
  # What the background did meanwhile: events made, deliveries started
  # (each hanging until WEBHOOK_TIMEOUT_SECS).
  counts=$(psql "$PG/bench_webhooks" -tAc \
    "SELECT (SELECT max(last_sequence) FROM organization_event_counters), (SELECT count(*) FROM webhook_deliveries)")
  echo "{\"label\":\"background, r$round\",\"events_so_far\":${counts%|*},\"deliveries_started\":${counts#*|}}" | tee -a $OUT
  for hook in "${hooks[@]}"; do
    call WebhookService/DeleteWebhook "{\"id\":\"$hook\"}" >/dev/null
  done
done
psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS bench_webhooks WITH (FORCE)" >/dev/null || true
