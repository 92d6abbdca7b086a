#!/usr/bin/env bash
# Runs README.md's commands as written, so the README cannot drift from the
# service:
#
# - The run command: the first ```console block under "## Quick start"
#   (`cargo run --release`), run verbatim from the repository root in the
#   background, in its own process group, until health says SERVING. Run
#   `cargo build --release` first, or the first start compiles.
# - By default without DATABASE_URL, as the README's run command is meant
#   for, so it serves from a fresh SQLite file `chatbot-backend.db` in the
#   repository root (refused if one is already there, and removed at exit);
#   with README_BACKEND=postgres against a fresh PostgreSQL database
#   readme_<random>, dropped again at exit.
# - Then every ```sh block of the documentation, in order and unchanged, in
#   ONE bash session in the repository root under `set -euo pipefail`, so
#   variables (TOKEN, CHATBOT_ID, ...) carry from block to block and the
#   operator commands (`cargo run --release -- create-admin ...`) run as
#   written. The files go in DOCS's order: the walkthrough first (it makes
#   what the others use), README.md's integration guide after the reference
#   pages. Blocks fenced as ```console or ```text are not run.
# - Then checks a few expectations the walkthrough must have established.
#
# Needs: cargo, grpcurl, python3; for README_BACKEND=postgres also PostgreSQL
# at 127.0.0.1:5432 (user postgres, trust) and psql. Exit status non-zero on
# any failure, naming the README block.
set -euo pipefail

cd "$(dirname "$0")/.."
REPO_ROOT=$(pwd)
README="${README_FILE:-$REPO_ROOT/README.md}"   # README_FILE: to try an edited copy
# Every page with commands, in the order they run.
DOCS=(docs/walkthrough.md docs/security.md docs/configuration.md docs/operations.md
      docs/errors.md "$README" CONTRIBUTING.md)
ADDR=127.0.0.1:50051
PG_SERVER_URL=postgres://postgres@127.0.0.1:5432
BACKEND=${README_BACKEND:-sqlite}

# The run command, as README gives it.
RUN_COMMAND=$(awk '
    /^## Quick start/ { section = 1; next }
    section && /^## / { exit }
    section && /^```console[[:space:]]*$/ { inside = 1; next }
    inside && /^```/ { exit }
    inside { print }
' "$README")
if [[ -z "$RUN_COMMAND" || "$RUN_COMMAND" == *$'\n'* ]]; then
    echo "readme_commands: expected one run command in the first console block under '## Quick start', got: '$RUN_COMMAND'" >&2
    exit 1
fi

tools=(cargo grpcurl python3 setsid)
[[ $BACKEND == postgres ]] && tools+=(psql)
for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null || { echo "readme_commands: $tool is required" >&2; exit 1; }
done

if (exec 3<>"/dev/tcp/${ADDR%:*}/${ADDR##*:}") 2>/dev/null; then
    echo "readme_commands: $ADDR is already in use; stop whatever listens there (e.g. a dev server) and retry" >&2
    exit 1
fi

DB_NAME="readme_$(date +%s)_$RANDOM"
SQLITE_FILES=(chatbot-backend.db chatbot-backend.db-wal chatbot-backend.db-shm chatbot-backend.db.lock)
case $BACKEND in
    postgres) export DATABASE_URL="$PG_SERVER_URL/$DB_NAME" ;;
    sqlite) unset DATABASE_URL; DB_NAME="chatbot-backend.db (SQLite, the default)" ;;
    *) echo "readme_commands: README_BACKEND must be sqlite or postgres" >&2; exit 1 ;;
esac
# The walkthrough assumes a fresh database, and the server reads a .env file
# from its working directory: either would change what the README promises.
# Refuse rather than move a developer's files.
for file in .env "${SQLITE_FILES[@]}"; do
    if [[ -e "$file" ]]; then
        echo "readme_commands: $REPO_ROOT/$file exists; the README's commands need a fresh start: move it away and retry" >&2
        exit 1
    fi
done
WORK=$(mktemp -d -t readme_commands.XXXXXX)
SERVER_LOG="$WORK/server.log"
SERVER_GROUP=

server_listening() { (exec 3<>"/dev/tcp/${ADDR%:*}/${ADDR##*:}") 2>/dev/null; }

cleanup() {
    local status=$?
    if [[ -n "$SERVER_GROUP" ]]; then
        # SIGTERM to the whole group: cargo and the server it started. The
        # server drains (SHUTDOWN_DRAIN_DELAY_SECS) and exits by itself.
        kill -TERM -- "-$SERVER_GROUP" 2>/dev/null || true
        for _ in $(seq 300); do
            kill -0 -- "-$SERVER_GROUP" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL -- "-$SERVER_GROUP" 2>/dev/null || true
        wait 2>/dev/null || true
    fi
    if [[ $status -ne 0 && -s "$SERVER_LOG" ]]; then
        echo "--- last lines of the server log ($SERVER_LOG):" >&2
        tail -n 40 "$SERVER_LOG" >&2 || true
    fi
    if [[ $BACKEND == postgres ]]; then
        psql "$PG_SERVER_URL/postgres" -q -v ON_ERROR_STOP=1 \
            -c "DROP DATABASE IF EXISTS \"$DB_NAME\" WITH (FORCE)" >/dev/null 2>&1 \
            || echo "readme_commands: could not drop database $DB_NAME" >&2
    else
        # Checked absent before the start, so these are the walkthrough's own.
        rm -f "${SQLITE_FILES[@]}"
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT

echo "readme_commands: running \`$RUN_COMMAND\` in $REPO_ROOT with database $DB_NAME"
# setsid: its own process group, so cleanup stops cargo and the server alike.
setsid bash -c "$RUN_COMMAND" >"$SERVER_LOG" 2>&1 &
SERVER_GROUP=$!

# The command may still compile, then the server creates the database and
# migrates before it listens; wait until readiness health says SERVING.
ready=
for _ in $(seq 1200); do
    if ! kill -0 "$SERVER_GROUP" 2>/dev/null; then
        echo "readme_commands: \`$RUN_COMMAND\` exited before serving" >&2
        exit 1
    fi
    if server_listening && grpcurl -plaintext -max-time 2 "$ADDR" grpc.health.v1.Health/Check 2>/dev/null \
        | grep -q '"SERVING"'; then
        ready=1
        break
    fi
    sleep 0.5
done
if [[ -z "$ready" ]]; then
    echo "readme_commands: the server did not report SERVING within 10 minutes" >&2
    exit 1
fi
echo "readme_commands: server is SERVING"

# Build the session: a prelude that reports the failing block, each ```sh
# block preceded by a marker, then the final checks.
SESSION="$WORK/session.sh"
{
    cat <<'PRELUDE'
set -Eeuo pipefail
__block=0
__line=0
__file=
__readme_block() {
    __file=$1
    __block=$2
    __line=$3
    printf '\n=== %s sh block %d (line %d)\n' "$__file" "$__block" "$__line"
}
trap 'echo "readme_commands: $__file sh block $__block (starting at line $__line) failed at: $BASH_COMMAND" >&2' ERR
PRELUDE
    for doc in "${DOCS[@]}"; do
        awk -v file="${doc#"$REPO_ROOT"/}" '
            /^```sh[[:space:]]*$/ { n++; printf "__readme_block %s %d %d\n", file, n, NR + 1; inside = 1; next }
            inside && /^```/ { inside = 0; next }
            inside { print }
            END {
                if (inside) { print "readme_commands: unterminated ```sh block in " file > "/dev/stderr"; exit 1 }
            }
        ' "$doc"
    done
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

grep -q 'create-admin' "$SESSION" || { echo "readme_commands: no create-admin step among the README's sh blocks" >&2; exit 1; }

blocks=$(grep -c '^__readme_block ' "$SESSION" || true)
[[ $blocks -gt 0 ]] || { echo "readme_commands: the documentation has no \`\`\`sh blocks" >&2; exit 1; }
echo "readme_commands: running $blocks sh blocks of ${DOCS[*]}"
# From the repository root, as the README says.
if ! bash "$SESSION"; then
    echo "readme_commands: FAILED" >&2
    exit 1
fi
echo "readme_commands: README walkthrough passed"
