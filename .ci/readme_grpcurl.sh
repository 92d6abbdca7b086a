#!/usr/bin/env bash
# Runs the README's grpcurl walkthrough against a real server, so the README
# cannot drift from the service.
#
# - Builds nothing: the server binary is $SERVER_BIN (default
#   target/debug/chatbot-backend; run `cargo build` first).
# - Starts it on 127.0.0.1:50051 (the address the README uses) in a scratch
#   directory. By default without DATABASE_URL, as the README's run command
#   does, so it serves from a fresh SQLite file there; with
#   README_BACKEND=postgres against a fresh PostgreSQL database
#   readme_<random>, dropped again at exit.
# - Extracts every ```sh block of README.md, in order, and runs them all in ONE
#   bash session under `set -euo pipefail`, so variables (TOKEN, CHATBOT_ID,
#   ...) carry from block to block. Blocks fenced as ```console or ```text are
#   not run. In the extracted blocks, `cargo run --release --` is replaced by
#   the binary, so the operator commands (create-admin, seed) need no build.
# - Then checks a few expectations the walkthrough must have established.
#
# Needs: grpcurl, python3; for README_BACKEND=postgres also PostgreSQL at
# 127.0.0.1:5432 (user postgres, trust) and psql. Exit status non-zero on any failure, naming the README block.
set -euo pipefail

cd "$(dirname "$0")/.."
REPO_ROOT=$(pwd)
README="${README_FILE:-$REPO_ROOT/README.md}"   # README_FILE: to try an edited copy
ADDR=127.0.0.1:50051
PG_SERVER_URL=postgres://postgres@127.0.0.1:5432
BACKEND=${README_BACKEND:-sqlite}

SERVER_BIN=${SERVER_BIN:-target/debug/chatbot-backend}
if [[ ! -x "$SERVER_BIN" ]]; then
    echo "readme_grpcurl: server binary $SERVER_BIN not found or not executable; run \`cargo build\` first" >&2
    exit 1
fi
SERVER_BIN="$(cd "$(dirname "$SERVER_BIN")" && pwd)/$(basename "$SERVER_BIN")"

tools=(grpcurl python3)
[[ $BACKEND == postgres ]] && tools+=(psql)
for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null || { echo "readme_grpcurl: $tool is required" >&2; exit 1; }
done

if (exec 3<>"/dev/tcp/${ADDR%:*}/${ADDR##*:}") 2>/dev/null; then
    echo "readme_grpcurl: $ADDR is already in use; stop whatever listens there (e.g. a dev server) and retry" >&2
    exit 1
fi

DB_NAME="readme_$(date +%s)_$RANDOM"
case $BACKEND in
    postgres) export DATABASE_URL="$PG_SERVER_URL/$DB_NAME" ;;
    sqlite) unset DATABASE_URL; DB_NAME="chatbot-backend.db (SQLite, the default)" ;;
    *) echo "readme_grpcurl: README_BACKEND must be sqlite or postgres" >&2; exit 1 ;;
esac
WORK=$(mktemp -d -t readme_grpcurl.XXXXXX)
SERVER_LOG="$WORK/server.log"
SERVER_PID=

cleanup() {
    local status=$?
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ $status -ne 0 && -s "$SERVER_LOG" ]]; then
        echo "--- last lines of the server log ($SERVER_LOG):" >&2
        tail -n 40 "$SERVER_LOG" >&2 || true
    fi
    if [[ $BACKEND == postgres ]]; then
        psql "$PG_SERVER_URL/postgres" -q -v ON_ERROR_STOP=1 \
            -c "DROP DATABASE IF EXISTS \"$DB_NAME\" WITH (FORCE)" >/dev/null 2>&1 \
            || echo "readme_grpcurl: could not drop database $DB_NAME" >&2
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT

# The server runs in the scratch directory so that a developer's .env in the
# repository cannot change what the README promises (dotenvy reads .env from
# the working directory). Settings the walkthrough relies on are explicit.
echo "readme_grpcurl: starting $SERVER_BIN on $ADDR with database $DB_NAME"
(
    cd "$WORK"
    exec env \
        LISTEN_ADDR="$ADDR" \
        SECRET_KEY="readme-walkthrough-secret-key-0123456789abcdef" \
        ALLOW_SIGNUP=true \
        ALLOW_PRIVATE_LLM_ENDPOINTS=false \
        MIGRATE_ON_START=true \
        SHUTDOWN_DRAIN_DELAY_SECS=0 \
        SHUTDOWN_GRACE_SECS=2 \
        "$SERVER_BIN" serve
) >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!

# The server creates the database and migrates before it listens; wait until
# readiness health says SERVING.
ready=
for _ in $(seq 120); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "readme_grpcurl: the server exited during startup" >&2
        exit 1
    fi
    if grpcurl -plaintext -max-time 2 "$ADDR" grpc.health.v1.Health/Check 2>/dev/null \
        | grep -q '"SERVING"'; then
        ready=1
        break
    fi
    sleep 0.5
done
if [[ -z "$ready" ]]; then
    echo "readme_grpcurl: the server did not report SERVING within 60 s" >&2
    exit 1
fi
echo "readme_grpcurl: server is SERVING"

# Build the session: a prelude that reports the failing block, each ```sh
# block preceded by a marker, then the final checks.
SESSION="$WORK/session.sh"
{
    cat <<'PRELUDE'
set -Eeuo pipefail
__block=0
__line=0
__readme_block() {
    __block=$1
    __line=$2
    printf '\n=== README.md sh block %d (line %d)\n' "$__block" "$__line"
}
trap 'echo "readme_grpcurl: README.md sh block $__block (starting at line $__line) failed at: $BASH_COMMAND" >&2' ERR
PRELUDE
    awk '
        /^```sh[[:space:]]*$/ { n++; printf "__readme_block %d %d\n", n, NR + 1; inside = 1; next }
        inside && /^```/ { inside = 0; next }
        inside { print }
        END {
            if (inside) { print "readme_grpcurl: unterminated ```sh block in README.md" > "/dev/stderr"; exit 1 }
            if (n == 0) { print "readme_grpcurl: README.md has no ```sh blocks" > "/dev/stderr"; exit 1 }
        }
    ' "$README" | sed 's|cargo run --release --|"$SERVER_BIN"|g'
    cat <<'CHECKS'

printf '\n=== checks after the walkthrough\n'
__block=checks
__line=-
# The walkthrough must have left these behind.
[[ "$TOKEN" == *.*.* ]] || { echo "TOKEN is not a JWT" >&2; exit 1; }
[[ -n "$ADMIN_TOKEN" ]] || { echo "ADMIN_TOKEN is empty" >&2; exit 1; }
[[ "$CHATBOT_ID" =~ ^[0-9a-f-]{36}$ ]] || { echo "CHATBOT_ID is not a UUID: $CHATBOT_ID" >&2; exit 1; }
[[ "$API_KEY" == cbk_* ]] || { echo "API_KEY does not look like a key" >&2; exit 1; }
# The revoked key stays revoked, and an admin sees the user the README created.
grpcurl -plaintext -d "{\"key\":\"$API_KEY\"}" 127.0.0.1:50051 chatbot.v1.ApiKeyService/VerifyApiKey \
    | grep -q '"reason": "VERIFY_API_KEY_REASON_REVOKED"'
grpcurl -plaintext -H "authorization: Bearer $ADMIN_TOKEN" -d '{"page_size":1000}' \
    127.0.0.1:50051 chatbot.v1.UserService/ListUsers | grep -q '"email": "alice@example.com"'
echo "all checks passed"
CHECKS
} >"$SESSION"

grep -q 'create-admin' "$SESSION" || { echo "readme_grpcurl: no create-admin step among the README's sh blocks" >&2; exit 1; }
if grep -q 'cargo ' "$SESSION"; then
    echo "readme_grpcurl: a README sh block runs cargo other than as \`cargo run --release --\`:" >&2
    grep -n 'cargo ' "$SESSION" >&2
    exit 1
fi

echo "readme_grpcurl: running $(grep -c '^__readme_block ' "$SESSION") README sh blocks"
# The session runs in the scratch directory too: the blocks need no files, and
# nothing they write lands in the repository.
if ! (cd "$WORK" && SERVER_BIN="$SERVER_BIN" bash "$SESSION"); then
    echo "readme_grpcurl: FAILED" >&2
    exit 1
fi
echo "readme_grpcurl: README walkthrough passed"
