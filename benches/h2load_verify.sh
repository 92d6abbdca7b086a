#!/usr/bin/env bash
# VerifyApiKey for a plain key and for a restricted one (ten networks, ten
# permissions, as loadgen's verify-api-key-restricted makes it), and Envoy's
# Check for the plain key (the request loadgen's ext-authz-check sends), driven by
# h2load with a prepared request body: the client neither builds requests
# nor decodes answers, so the rates compare the server's work alone (the
# load generator of `benches/run.sh` decodes every answer on the same two
# cores, and a restricted key's answer is twice the size). Rounds
# interleave the two keys; the server's CPU per request is read from
# /proc around each run.
#
#   cargo build --release --bins
#   benches/h2load_verify.sh      # writes target/bench/h2load-verify.jsonl
#   KINDS="plain check" benches/h2load_verify.sh
#   KINDS="get-chatbot pgbench-8 pgbench-64" benches/h2load_verify.sh
#
# Kinds: plain, restricted, check (VerifyApiKey's key through Envoy's
# Check), get-chatbot (the chatbot, as its owner), and pgbench-8 /
# pgbench-64 (pgbench -S -M prepared at 8 and 64 clients on a scale-10
# database, for the ratio the issues ask of GetChatbot).
#
# Needs PostgreSQL at 127.0.0.1:5432 (user postgres, trust), h2load
# (Debian's nghttp2-client), grpcurl, python3; port 50082 free.
set -euo pipefail
export CONSOLE_LISTEN_ADDR=${CONSOLE_LISTEN_ADDR:-127.0.0.1:0}
cd "$(dirname "$0")/.."
PG=postgres://postgres@127.0.0.1:5432
ADDR=127.0.0.1:50082
SERVER=${SERVER:-target/release/chatbot-backend}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
KINDS=${KINDS:-plain restricted}
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
def field(number, data):
    data = data.encode() if isinstance(data, str) else data
    assert len(data) < 128
    return bytes([number << 3 | 2, len(data)]) + data
out, key, *rest = sys.argv[1:]
if rest == ["check"]:
    # CheckRequest{attributes{request{http{method, headers{x-api-key}, path}}}}
    header = field(1, "x-api-key") + field(2, key)
    http = field(2, "POST") + field(3, header) + field(4, "/v1/chat/completions")
    message = field(1, field(4, field(2, http)))
else:
    message = field(1, key)
    if rest:
        message += field(3, rest[0]) + field(4, rest[1])
open(out, "wb").write(b"\0" + struct.pack(">I", len(message)) + message)
PY
}
body plain "$PLAIN"
body restricted "$RESTRICTED" 198.51.100.7 models/loadgen-model-9
body check "$PLAIN" check
body get-chatbot "$CHATBOT"
for check in "{\"key\":\"$PLAIN\"}" \
    "{\"key\":\"$RESTRICTED\",\"client_address\":\"198.51.100.7\",\"required_permissions\":[\"models/loadgen-model-9\"]}"; do
    [[ $(grpcurl -plaintext -d "$check" "$ADDR" chatbot.v1.ApiKeyService/VerifyApiKey | json_field valid) == True ]] \
        || { echo "h2load_verify: a key does not verify" >&2; exit 1; }
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }
if [[ $KINDS == *pgbench* ]]; then
    psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS pgbench_h2" -c "CREATE DATABASE pgbench_h2" >/dev/null
    pgbench -i -q -s 10 -h 127.0.0.1 -U postgres pgbench_h2 >/dev/null 2>&1
fi
pgbench_run() { # clients round
    local tps
    tps=$(pgbench -S -M prepared -c "$1" -j 2 -T "$DURATION" -h 127.0.0.1 -U postgres pgbench_h2 2>/dev/null \
        | awk '/^tps/ {print $3; exit}')
    echo "{\"key\": \"pgbench-$1\", \"round\": $2, \"rps\": $tps}" | tee -a "$OUT"
}

run() { # name round
    local before after path=chatbot.v1.ApiKeyService/VerifyApiKey auth=()
    case $1 in
        pgbench-*) pgbench_run "${1#pgbench-}" "$2"; return ;;
        check) path=envoy.service.auth.v3.Authorization/Check ;;
        get-chatbot) path=chatbot.v1.ChatbotService/GetChatbot auth=(-H "authorization: Bearer $TOKEN") ;;
    esac
    before=$(cpu_ticks)
    h2load -c 4 -m 16 -D "$DURATION" --warm-up-time 1 \
        -H 'content-type: application/grpc' -H 'te: trailers' "${auth[@]}" \
        -d "$WORK/$1.bin" "http://$ADDR/$path" >"$WORK/out" 2>&1
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
# Check must allow the key (an OK answer, not a denial) for its rate to mean anything.
python3 - "$WORK/check.bin" >"$WORK/check.json" <<'PY'
import json, sys
data = open(sys.argv[1], "rb").read()[5:]
def fields(data):
    at = 0
    while at < len(data):
        tag, length = data[at], data[at + 1]
        yield tag >> 3, data[at + 2 : at + 2 + length]
        at += 2 + length
http = dict(fields(dict(fields(dict(fields(dict(fields(data))[1]))[4]))[2]))
header = dict(fields(http[3]))
print(json.dumps({"attributes": {"request": {"http": {"method": http[2].decode(),
    "path": http[4].decode(), "headers": {header[1].decode(): header[2].decode()}}}}}))
PY
grpcurl -plaintext -d @ "$ADDR" envoy.service.auth.v3.Authorization/Check <"$WORK/check.json" | grep -q '"okResponse"' \
    || { echo "h2load_verify: Check does not allow the key" >&2; exit 1; }

[[ $(grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d "{\"id\":\"$CHATBOT\"}" "$ADDR" \
    chatbot.v1.ChatbotService/GetChatbot | json_field chatbot id) == "$CHATBOT" ]] \
    || { echo "h2load_verify: GetChatbot does not answer the chatbot" >&2; exit 1; }

for round in $(seq "$ROUNDS"); do
    for kind in $KINDS; do
        run "$kind" "$round"
    done
done

python3 - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
kinds = list(dict.fromkeys(r["key"] for r in rows))
if "pgbench-8" in kinds and "get-chatbot" in kinds:
    print("| round | pgbench -S 8 / 64 clients | GetChatbot req/s (ratio to the better) | server CPU µs/req |")
    print("|---|---|---|---|")
    for n in sorted({r["round"] for r in rows}):
        row = {r["key"]: r for r in rows if r["round"] == n}
        best = max(row["pgbench-8"]["rps"], row["pgbench-64"]["rps"])
        g = row["get-chatbot"]
        print(f"| {n} | {row['pgbench-8']['rps']:,.0f} / {row['pgbench-64']['rps']:,.0f} "
              f"| {g['rps']:,.0f} ({g['rps'] / best:.2f}x) | {g['server_cpu_us_per_req']} |")
    sys.exit(0)
others = [k for k in kinds if k != "plain"]
print("| round | plain key req/s | " + " | ".join(f"{k} req/s (ratio)" for k in others)
      + " | server CPU µs/req " + " / ".join(kinds) + " |")
print("|---" * (3 + len(others)) + "|")
for n in sorted({r["round"] for r in rows}):
    row = {r["key"]: r for r in rows if r["round"] == n}
    p = row["plain"]
    cells = [f"{row[k]['rps']:,.0f} ({row[k]['rps'] / p['rps']:.2f}x)" for k in others]
    cpu = " / ".join(str(row[k]["server_cpu_us_per_req"]) for k in kinds)
    print(f"| {n} | {p['rps']:,.0f} | " + " | ".join(cells) + f" | {cpu} |")
PY
