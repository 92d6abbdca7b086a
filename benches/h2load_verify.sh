#!/usr/bin/env bash
# VerifyApiKey for a plain key and for a restricted one (ten networks, ten
# permissions, as loadgen's verify-api-key-restricted makes it), driven by
# h2load with a prepared request body: the client neither builds requests
# nor decodes answers, so the rates compare the server's work alone (the
# load generator of `benches/run.sh` decodes every answer on the same two
# cores, and a restricted key's answer is twice the size). Rounds
# interleave the two keys; the server's CPU per request is read from
# /proc around each run.
#
#   cargo build --release --bins
#   benches/h2load_verify.sh      # writes target/bench/h2load-verify.jsonl
#
# Needs PostgreSQL at 127.0.0.1:5432 (user postgres, trust), h2load
# (Debian's nghttp2-client), grpcurl, python3; port 50082 free.
set -euo pipefail
export CONSOLE_LISTEN_ADDR=${CONSOLE_LISTEN_ADDR:-127.0.0.1:0}
cd "$(dirname "$0")/.."
PG=postgres://postgres@127.0.0.1:5432
ADDR=127.0.0.1:50082
SERVER=target/release/chatbot-backend
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
mkdir -p target/bench
OUT=${OUT:-target/bench/h2load-verify.jsonl}
: >"$OUT"
WORK=$(mktemp -d)
psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS h2load_verify WITH (FORCE)" >/dev/null
DATABASE_URL=$PG/h2load_verify "$SERVER" migrate >/dev/null
export DATABASE_URL=$PG/h2load_verify LISTEN_ADDR=$ADDR LOG_FORMAT=json RUST_LOG=warn \
    RATE_LIMIT_PER_USER=0 RATE_LIMIT_PER_ADDRESS=0 RATE_LIMIT_PER_API_KEY=0 \
    SECRET_KEY=benchmark-secret-key-0123456789abcdef SHUTDOWN_DRAIN_DELAY_SECS=0
"$SERVER" serve >target/bench/h2load-verify-server.log 2>&1 &
SERVER_PID=$!
trap 'kill $SERVER_PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
sleep 3

json_field() { python3 -c 'import sys, json
value = json.load(sys.stdin)
for key in sys.argv[1:]:
    value = value[key]
print(value)' "$@"; }
CREDENTIALS='{"email":"h2load@example.com","password":"correct-horse-battery"}'
grpcurl -plaintext -d "$CREDENTIALS" "$ADDR" chatbot.v1.UserService/CreateUser >/dev/null
TOKEN=$(grpcurl -plaintext -d "$CREDENTIALS" "$ADDR" chatbot.v1.AuthService/Login | json_field accessToken)
CHATBOT=$(grpcurl -plaintext -H "authorization: Bearer $TOKEN" \
    -d '{"name":"h2load","llm_endpoint_url":"https://llm.example.com/v1/chat"}' \
    "$ADDR" chatbot.v1.ChatbotService/CreateChatbot | json_field chatbot id)
key() { # extra JSON fields of CreateApiKeyRequest
    grpcurl -plaintext -H "authorization: Bearer $TOKEN" \
        -d "{\"chatbot_id\":\"$CHATBOT\",\"display_name\":\"h2load\"$1}" \
        "$ADDR" chatbot.v1.ApiKeyService/CreateApiKey | json_field key
}
# loadgen's restrictions: nine networks that miss the client, then its own.
RESTRICTIONS=$(python3 -c '
import json
networks = [f"10.{i}.0.0/16" for i in range(9)] + ["198.51.100.0/24"]
permissions = [f"models/loadgen-model-{i}" for i in range(10)]
print(json.dumps({"allowed_networks": networks, "permissions": permissions})[1:-1])')
PLAIN=$(key "")
RESTRICTED=$(key ",$RESTRICTIONS")

# gRPC bodies (a 5-byte frame header, then the message), and the same
# request through grpcurl, which must answer valid.
body() { # name key [client_address permission]
    python3 - "$WORK/$1.bin" "${@:2}" <<'PY'
import struct, sys
def field(number, text):
    data = text.encode()
    assert len(data) < 128
    return bytes([number << 3 | 2, len(data)]) + data
out, key, *rest = sys.argv[1:]
message = field(1, key)
if rest:
    message += field(3, rest[0]) + field(4, rest[1])
open(out, "wb").write(b"\0" + struct.pack(">I", len(message)) + message)
PY
}
body plain "$PLAIN"
body restricted "$RESTRICTED" 198.51.100.7 models/loadgen-model-9
for check in "{\"key\":\"$PLAIN\"}" \
    "{\"key\":\"$RESTRICTED\",\"client_address\":\"198.51.100.7\",\"required_permissions\":[\"models/loadgen-model-9\"]}"; do
    [[ $(grpcurl -plaintext -d "$check" "$ADDR" chatbot.v1.ApiKeyService/VerifyApiKey | json_field valid) == True ]] \
        || { echo "h2load_verify: a key does not verify" >&2; exit 1; }
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }
run() { # name round
    local before after
    before=$(cpu_ticks)
    h2load -c 4 -m 16 -D "$DURATION" --warm-up-time 1 \
        -H 'content-type: application/grpc' -H 'te: trailers' \
        -d "$WORK/$1.bin" "http://$ADDR/chatbot.v1.ApiKeyService/VerifyApiKey" >"$WORK/out" 2>&1
    after=$(cpu_ticks)
    python3 - "$WORK/out" "$1" "$2" "$((after - before))" "$(getconf CLK_TCK)" <<'PY' | tee -a "$OUT"
import json, re, sys
text = open(sys.argv[1]).read()
key, round_, ticks, hz = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rps = float(re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", text).group(1))
done = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", text)
assert done and int(done.group(4)) == 0 and int(done.group(5)) == 0, text
statuses = re.search(r"status codes: (\d+) 2xx", text)
completed = int(done.group(2))
# The CPU counted includes the warm-up second: per request, over all sent.
print(json.dumps({"key": key, "round": round_, "rps": rps, "ok_2xx": int(statuses.group(1)),
                  "server_cpu_us_per_req": round(ticks / hz * 1e6 / max(completed, 1), 1)}))
PY
}
for round in $(seq "$ROUNDS"); do
    run plain "$round"
    run restricted "$round"
done

python3 - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("| round | plain key req/s | restricted key req/s (ratio) | server CPU µs/req plain / restricted |")
print("|---|---|---|---|")
for n in sorted({r["round"] for r in rows}):
    p = next(r for r in rows if r["round"] == n and r["key"] == "plain")
    r = next(r for r in rows if r["round"] == n and r["key"] == "restricted")
    print(f"| {n} | {p['rps']:,.0f} | {r['rps']:,.0f} ({r['rps'] / p['rps']:.2f}x) "
          f"| {p['server_cpu_us_per_req']} / {r['server_cpu_us_per_req']} |")
PY
