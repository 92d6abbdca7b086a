#!/usr/bin/env bash
# Builds the container image and runs it the way deploy/kubernetes runs it,
# then checks from outside what kubelet and a client would see. .ci/run
# calls it after `cargo build --release`; deploy/README.md ("What CI runs")
# says the same for readers.
#
# 1. Build. The base is .ci/container_base.sh's (distroless/cc-like, from
#    Debian's packages, cached), in place of gcr.io/distroless, which cannot
#    be pulled here. The image is deploy/Dockerfile's runtime stage as
#    written (the ARGs before its first FROM, and its last stage), built
#    FROM that base with the binary cargo built on the host
#    ($CARGO_TARGET_DIR or target/, release/chatbot-backend) in place of
#    the builder stage's: its one `COPY --from=builder /out/chatbot-backend`
#    becomes `COPY chatbot-backend`. Tagged as the Deployment's image.
# 2. Contents: under 50 MB uncompressed; no file in any bin/ or sbin/ but
#    the server (so no shell and no package manager); user 65532:65532; OCI
#    labels version and licenses as in Cargo.toml, revision the commit
#    built, a source; `--version`, run in the image, prints Cargo.toml's
#    version (which also shows the loader finds every library it needs).
# 3. Run as deploy/kubernetes says, read from its YAML: the pod's
#    runAsUser:runAsGroup, a read-only root (and none of the tmpfs mounts
#    podman would add), capabilities dropped, no privilege escalation, the
#    container's memory and CPU limits, the ConfigMap's data and, as the
#    Secret, DATABASE_URL (a fresh database on the machine's PostgreSQL,
#    dropped at exit) and a random SECRET_KEY. First the migrate Job's
#    command and args, which must exit 0, then the Deployment's. Each
#    container has a network namespace of its own, as a pod has: its
#    loopback is its own (the ConfigMap's console address binds there, not
#    on the host's), and the server's 0.0.0.0:50051 is reached from the
#    host only through a published port (a free one on the host's
#    127.0.0.1). slirp4netns gives the namespace its network; PostgreSQL
#    here listens on the host's 127.0.0.1 only, which slirp4netns's
#    allow_host_loopback makes reachable as 10.0.2.2 (what a cluster's
#    database Service name would be).
# 4. Probes as kubelet makes them, with grpcurl: the startup probe's gRPC
#    health service (liveness) SERVING within periodSeconds x
#    failureThreshold, each try within timeoutSeconds; readiness's service
#    ("") SERVING within that budget too.
# 5. Through that port: CreateUser, Login, CreateChatbot, CreateApiKey and
#    VerifyApiKey, which must say valid.
# 6. Shutdown: sign-ups in flight (CreateUser hashes the password with
#    argon2, MAX_CONCURRENT_HASHES at a time; each its own email, as
#    concurrent Logins for one email are refused by the login throttle's
#    reservations), then `podman stop --time terminationGracePeriodSeconds`
#    (SIGTERM, then SIGKILL once that time is up). Readiness must turn
#    NOT_SERVING, the server must exit 0 before the SIGKILL, every sign-up
#    must be answered with its user, some of them (by the server's log)
#    after the SIGTERM, and the log must say "shut down" without abandoning
#    connections. Which of those the server had received before the
#    SIGTERM, and which while draining, depends on how fast the clients
#    start; both counts are printed.
#
# 7. Time: the whole step's seconds, against a budget of a few minutes
#    with the base cached (printed, not enforced: the machine is shared).
#
# Needs: root, podman, runc and slirp4netns (.ci/run installs them), grpcurl, python3
# with PyYAML, PostgreSQL at 127.0.0.1:5432 (user postgres, trust) with
# createdb and psql, git. Podman reads .ci/containers.conf, not the
# machine's configuration. Exit status non-zero on any failure, with the
# container's log.
set -euo pipefail

cd "$(dirname "$0")/.."
REPO_ROOT=$(pwd)
export CONTAINERS_CONF="$REPO_ROOT/.ci/containers.conf"
BINARY="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/chatbot-backend"
PG_SERVER_URL=postgres://postgres@127.0.0.1:5432
# The host's loopback, seen from a container's own network namespace.
NETWORK=slirp4netns:allow_host_loopback=true
PG_FROM_CONTAINER=postgres://postgres@10.0.2.2:5432
# With the base image cached (the usual case), the step should take less.
BUDGET_SECS=180
MAX_IMAGE_BYTES=50000000
IN_FLIGHT_SIGNUPS=24

say() { printf 'container_image: %s\n' "$*"; }
die() { printf 'container_image: FAILED: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { python3 -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.1f}")' "$1" "$(now)"; }

for tool in podman runc slirp4netns grpcurl python3 createdb psql git strip; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
[[ -x "$BINARY" ]] || die "no $BINARY: run \`cargo build --release\` first"

step_started=$(now)
WORK=$(mktemp -d -t container_image.XXXXXX)
DB_NAME="image_$(date +%s)_$RANDOM"
DATABASE_URL="$PG_SERVER_URL/$DB_NAME"
NAME="chatbot-backend-ci-$$"
DB_CREATED=

cleanup() {
    local status=$?
    if podman container exists "$NAME" 2>/dev/null; then
        if [[ $status -ne 0 ]]; then
            echo "--- last lines of the server's log:" >&2
            podman logs --tail 40 "$NAME" >&2 2>&1 || true
        fi
        podman rm --force --time 0 "$NAME" >/dev/null 2>&1 || true
    fi
    podman rm --force --ignore --time 0 "$NAME-migrate" "$NAME-files" >/dev/null 2>&1 || true
    if [[ -n "$DB_CREATED" ]]; then
        psql "$PG_SERVER_URL/postgres" -q -v ON_ERROR_STOP=1 \
            -c "DROP DATABASE IF EXISTS \"$DB_NAME\" WITH (FORCE)" >/dev/null 2>&1 \
            || echo "container_image: could not drop database $DB_NAME" >&2
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT

# --- what Cargo.toml and the manifests say ----------------------------------
read -r VERSION LICENSE < <(python3 -c '
import tomllib
package = tomllib.load(open("Cargo.toml", "rb"))["package"]
print(package["version"], package["license"])')
REVISION=$(git rev-parse HEAD)
# The OCI source: the clone's origin, else this checkout.
SOURCE=$(git config --get remote.origin.url || echo "file://$REPO_ROOT")

# Shell assignments from deploy/kubernetes, and the ConfigMap as an env file.
manifests=$(python3 - "$WORK/env" <<'PY'
import json, shlex, sys
from pathlib import Path
try:
    import yaml
except ImportError:
    import subprocess
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "pyyaml"])
    import yaml

docs = [d for p in sorted(Path("deploy/kubernetes").glob("*.yaml"))
        for d in yaml.safe_load_all(p.read_text()) if d]
def one(kind):
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]

def quantity_bytes(q):
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if q.endswith(suffix):
            return int(float(q[: -len(suffix)]) * factor)
    return int(q)

def cpus(q):
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)

def run_flags(pod, container):
    """podman run flags for what the pod and container specs set."""
    psc = pod.get("securityContext") or {}
    sc = {**psc, **(container.get("securityContext") or {})}
    user, group = sc.get("runAsUser"), sc.get("runAsGroup")
    assert user is not None and group is not None, "runAsUser and runAsGroup must be set"
    if sc.get("runAsNonRoot"):
        assert user != 0, "runAsNonRoot with runAsUser 0"
    flags = [f"--user={user}:{group}"]
    if sc.get("readOnlyRootFilesystem"):
        # Kubernetes mounts no tmpfs of its own on /tmp, /var/tmp or /run.
        flags += ["--read-only", "--read-only-tmpfs=false"]
    drop = (sc.get("capabilities") or {}).get("drop") or []
    flags += [f"--cap-drop={c}" for c in drop]
    for c in (sc.get("capabilities") or {}).get("add") or []:
        flags.append(f"--cap-add={c}")
    if sc.get("allowPrivilegeEscalation") is False:
        flags.append("--security-opt=no-new-privileges")
    seccomp = (sc.get("seccompProfile") or {}).get("type")
    assert seccomp in (None, "RuntimeDefault"), f"seccompProfile {seccomp} is not run here"
    limits = (container.get("resources") or {}).get("limits") or {}
    if "memory" in limits:
        flags.append(f"--memory={quantity_bytes(str(limits['memory']))}")
    if "cpu" in limits:
        flags.append(f"--cpus={cpus(str(limits['cpu']))}")
    for env in container.get("env") or []:
        assert "value" in env, f"env {env['name']}: only literal values are run here"
        flags.append(f"--env={env['name']}={env['value']}")
    return flags

def argv(container):
    """--entrypoint for `command` (replaces the image's ENTRYPOINT, and its
    CMD with it), then `args` (replace CMD)."""
    entry = ["--entrypoint=" + json.dumps(container["command"])] if container.get("command") else []
    return entry, list(container.get("args") or [])

def emit(name, value):
    if isinstance(value, list):
        print(f"{name}=({' '.join(shlex.quote(str(v)) for v in value)})")
    else:
        print(f"{name}={shlex.quote(str(value))}")

cm, dep, job = one("ConfigMap"), one("Deployment"), one("Job")
pod = dep["spec"]["template"]["spec"]
server, = pod["containers"]
job_pod = job["spec"]["template"]["spec"]
migrate, = job_pod["containers"]
for what, c in (("Deployment", server), ("Job", migrate)):
    names = [r.get("configMapRef", {}).get("name") for r in c.get("envFrom") or []]
    assert cm["metadata"]["name"] in names, f"{what} does not take the ConfigMap"

with open(sys.argv[1], "w") as env:
    for key, value in (cm.get("data") or {}).items():
        assert "\n" not in str(value), f"ConfigMap {key}: multi-line values are not run here"
        env.write(f"{key}={value}\n")

port, = [p["containerPort"] for p in server["ports"] if p.get("name") == "grpc"]
startup, readiness = server["startupProbe"], server["readinessProbe"]
emit("IMAGE", server["image"])
emit("PORT", port)
emit("GRACE", pod.get("terminationGracePeriodSeconds", 30))
emit("SERVER_FLAGS", run_flags(pod, server))
emit("MIGRATE_FLAGS", run_flags(job_pod, migrate))
entry, args = argv(server)
emit("SERVER_ENTRYPOINT", entry); emit("SERVER_ARGS", args)
entry, args = argv(migrate)
emit("MIGRATE_ENTRYPOINT", entry); emit("MIGRATE_ARGS", args)
emit("STARTUP_SERVICE", startup["grpc"].get("service", ""))
emit("STARTUP_PERIOD", startup.get("periodSeconds", 10))
emit("STARTUP_TRIES", startup.get("failureThreshold", 3))
emit("STARTUP_TIMEOUT", startup.get("timeoutSeconds", 1))
emit("READINESS_SERVICE", readiness["grpc"].get("service", ""))
emit("READINESS_TIMEOUT", readiness.get("timeoutSeconds", 1))
PY
) || die "could not read deploy/kubernetes (above)"
eval "$manifests"
# The container's port, published on a free port of the host's loopback.
HOST_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ADDR="127.0.0.1:$HOST_PORT"
[[ $IMAGE == */* ]] || IMAGE="localhost/$IMAGE"

# --- 1. build ---------------------------------------------------------------
started=$(now)
BASE=$(.ci/container_base.sh)

CONTEXT="$WORK/context"
mkdir -p "$CONTEXT"
cp "$BINARY" "$CONTEXT/chatbot-backend"
# As the Dockerfile's builder installs it: without its symbol table (the
# build in target/ keeps it, for profiling).
strip "$CONTEXT/chatbot-backend"
awk '
    /^FROM[[:space:]]/ { started = 1; stage = "" }
    !started && /^ARG[[:space:]]/ { print }
    started { stage = stage $0 "\n" }
    END { printf "%s", stage }
' deploy/Dockerfile >"$CONTEXT/Containerfile.stage"
from_builder='COPY --from=builder /out/chatbot-backend '
[[ $(grep -c "^$from_builder" "$CONTEXT/Containerfile.stage") -eq 1 ]] \
    || die "deploy/Dockerfile's last stage must have one line starting '$from_builder'"
sed "s|^$from_builder|COPY chatbot-backend |" "$CONTEXT/Containerfile.stage" >"$CONTEXT/Containerfile"
rm "$CONTEXT/Containerfile.stage"

previous=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
podman build --quiet --pull=never --layers=false \
    --build-arg RUNTIME_IMAGE="$BASE" \
    --build-arg REVISION="$REVISION" \
    --build-arg SOURCE="$SOURCE" \
    --file "$CONTEXT/Containerfile" --tag "$IMAGE" "$CONTEXT" >/dev/null
current=$(podman image inspect --format '{{.Id}}' "$IMAGE")
if [[ -n "$previous" && "$previous" != "$current" ]]; then
    # The previous build of this tag, now untagged.
    podman rmi "$previous" >/dev/null 2>&1 || true
fi
say "built $IMAGE (${current:0:12}) FROM $BASE in $(since "$started") s"

# --- 2. contents ------------------------------------------------------------
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
((size < MAX_IMAGE_BYTES)) || die "image is $size bytes uncompressed, over $MAX_IMAGE_BYTES"
# deploy/README states the size; keep it true (within 2 MB).
stated=$(sed -n 's/.*uncompressed (about \([0-9.]*\) MB.*/\1/p' deploy/README.md)
[[ -n "$stated" ]] || die "deploy/README.md no longer says 'uncompressed (about N MB'"
python3 -c "import sys; sys.exit(abs($size / 1e6 - $stated) > 2)" \
    || die "the image is $(python3 -c "print(round($size / 1e6, 1))") MB; deploy/README.md says about $stated MB"

podman create --name "$NAME-files" "$IMAGE" >/dev/null
podman export "$NAME-files" | tar -t >"$WORK/files"
podman rm "$NAME-files" >/dev/null
programs=$(grep -E '(^|/)s?bin/[^/]+$|(^|/)(sh|bash|dash|busybox|dpkg|apt|apt-get)$' "$WORK/files" \
    | grep -vxF 'usr/local/bin/chatbot-backend' || true)
[[ -z "$programs" ]] || die "the image holds programs besides the server: $(echo "$programs" | tr '\n' ' ')"
grep -qxF 'usr/local/bin/chatbot-backend' "$WORK/files" || die "no /usr/local/bin/chatbot-backend in the image"

user=$(podman image inspect --format '{{.Config.User}}' "$IMAGE")
[[ "$user" == 65532:65532 ]] || die "image user is '$user', expected 65532:65532"

label() { podman image inspect --format "{{index .Labels \"org.opencontainers.image.$1\"}}" "$IMAGE"; }
[[ "$(label version)" == "$VERSION" ]] || die "label version '$(label version)' != Cargo.toml's $VERSION"
[[ "$(label licenses)" == "$LICENSE" ]] || die "label licenses '$(label licenses)' != Cargo.toml's $LICENSE"
[[ "$(label revision)" == "$REVISION" ]] || die "label revision '$(label revision)' != $REVISION"
[[ -n "$(label source)" ]] || die "label source is empty"

reported=$(podman run --rm --network=none "${SERVER_FLAGS[@]}" "$IMAGE" --version)
[[ "$reported" == "chatbot-backend $VERSION" ]] \
    || die "the image's binary says '$reported', Cargo.toml says $VERSION"
say "image: $size bytes uncompressed; no shell, package manager or other program; user $user;" \
    "labels version $VERSION, licenses $LICENSE, revision ${REVISION:0:12}, source $(label source); '$reported'"

# --- 3. migrate, then serve -------------------------------------------------
createdb -h 127.0.0.1 -U postgres "$DB_NAME"
DB_CREATED=1
{
    echo "DATABASE_URL=$PG_FROM_CONTAINER/$DB_NAME"
    echo "SECRET_KEY=$(head -c 48 /dev/urandom | base64 -w0)"
} >>"$WORK/env"

started=$(now)
if ! podman run --name "$NAME-migrate" --network="$NETWORK" --env-file "$WORK/env" \
    "${MIGRATE_FLAGS[@]}" "${MIGRATE_ENTRYPOINT[@]}" "$IMAGE" "${MIGRATE_ARGS[@]}" >"$WORK/migrate.log" 2>&1; then
    cat "$WORK/migrate.log" >&2
    die "the migrate Job's command failed in the image"
fi
podman rm "$NAME-migrate" >/dev/null
tables=$(psql "$DATABASE_URL" -Atc "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
((tables > 1)) || die "the migrate Job's command left $tables tables"
say "migrate Job (${MIGRATE_ARGS[*]}, ${MIGRATE_FLAGS[*]}): exit 0, $tables tables, $(since "$started") s"

started=$(now)
podman run --detach --name "$NAME" --network="$NETWORK" --publish "$ADDR:$PORT" --env-file "$WORK/env" \
    "${SERVER_FLAGS[@]}" "${SERVER_ENTRYPOINT[@]}" "$IMAGE" "${SERVER_ARGS[@]}" >/dev/null
say "server started in a network namespace of its own, its port $PORT published on $ADDR: ${SERVER_ARGS[*]} ${SERVER_FLAGS[*]}"

# --- 4. probes ----------------------------------------------------------------
health() { # service timeout -> the status, or nothing
    grpcurl -plaintext -max-time "$2" -d "{\"service\":\"$1\"}" "$ADDR" grpc.health.v1.Health/Check 2>/dev/null \
        | sed -n 's/.*"status": "\([A-Z_]*\)".*/\1/p'
}
running() { [[ "$(podman inspect --format '{{.State.Running}}' "$NAME")" == true ]]; }

# Like kubelet: a try every period, each within the timeout; the budget is
# the startup probe's tries.
budget=$((STARTUP_PERIOD * STARTUP_TRIES))
probe() { # service timeout what
    local tries=0 try_started
    while :; do
        try_started=$(now)
        tries=$((tries + 1))
        if [[ "$(health "$1" "$2")" == SERVING ]]; then
            say "$3 probe (service '$1'): SERVING after $tries tries, $(since "$started") s from start (budget $budget s)"
            return 0
        fi
        running || die "the server exited before its $3 probe passed"
        [[ $(python3 -c "print(int($(since "$started") < $budget))") == 1 ]] \
            || die "$3 probe (service '$1') not SERVING within $budget s"
        sleep "$(python3 -c "print(max(0.0, $STARTUP_PERIOD - ($(now) - $try_started)))")"
    done
}
probe "$STARTUP_SERVICE" "$STARTUP_TIMEOUT" startup
probe "$READINESS_SERVICE" "$READINESS_TIMEOUT" readiness

# --- 5. a client's calls ------------------------------------------------------
json_field() { python3 -c 'import sys, json
value = json.load(sys.stdin)
for key in sys.argv[1:]:
    value = value[key]
print(value)' "$@"; }
CREDENTIALS='{"email":"image-check@example.com","password":"correct-horse-battery"}'
grpcurl -plaintext -d "$CREDENTIALS" "$ADDR" chatbot.v1.UserService/CreateUser >/dev/null
TOKEN=$(grpcurl -plaintext -d "$CREDENTIALS" "$ADDR" chatbot.v1.AuthService/Login | json_field accessToken)
CHATBOT_ID=$(grpcurl -plaintext -H "authorization: Bearer $TOKEN" \
    -d '{"name":"Image Check Bot","llm_endpoint_url":"https://api.openai.com/v1/chat/completions"}' \
    "$ADDR" chatbot.v1.ChatbotService/CreateChatbot | json_field chatbot id)
API_KEY=$(grpcurl -plaintext -H "authorization: Bearer $TOKEN" \
    -d "{\"chatbot_id\":\"$CHATBOT_ID\",\"display_name\":\"image-check\"}" \
    "$ADDR" chatbot.v1.ApiKeyService/CreateApiKey | json_field key)
verified=$(grpcurl -plaintext -d "{\"key\":\"$API_KEY\"}" "$ADDR" chatbot.v1.ApiKeyService/VerifyApiKey)
[[ "$(json_field valid <<<"$verified")" == True && "$(json_field chatbotId <<<"$verified")" == "$CHATBOT_ID" ]] \
    || die "VerifyApiKey did not accept the new key: $verified"
say "through $ADDR: CreateUser, Login, CreateChatbot, CreateApiKey, VerifyApiKey valid for chatbot $CHATBOT_ID"

# --- 6. SIGTERM with calls in flight ------------------------------------------
signup_pids=()
for i in $(seq "$IN_FLIGHT_SIGNUPS"); do
    (
        out=$(grpcurl -plaintext -max-time "$GRACE" \
            -d "{\"email\":\"in-flight-$i@example.com\",\"password\":\"correct-horse-battery\"}" \
            "$ADDR" chatbot.v1.UserService/CreateUser 2>&1) && status=0 || status=$?
        printf '%s\n' "$out" >"$WORK/signup.$i.out"
        : >"$WORK/signup.$i.done"
        exit "$status"
    ) &
    signup_pids+=($!)
done
# Once the first two are answered, the others have reached the server and
# wait for the hashing thread (one hash at a time).
for _ in $(seq 600); do
    (($(compgen -G "$WORK/signup.*.done" | wc -l) >= 2)) && break
    sleep 0.05
done
stopped=$(now)
podman stop --time "$GRACE" "$NAME" >/dev/null &
stop_pid=$!

# Readiness turns NOT_SERVING at SIGTERM, while the server still answers
# (the drain delay), so kubelet takes the pod out of the Service before it
# stops accepting.
not_serving=
while :; do
    status=$(health "$READINESS_SERVICE" "$READINESS_TIMEOUT")
    if [[ "$status" == NOT_SERVING ]]; then
        not_serving=$(since "$stopped")
        break
    fi
    [[ "$status" == SERVING ]] || die "readiness stopped answering before it said NOT_SERVING"
    sleep 0.1
done

wait "$stop_pid" || die "podman stop failed"
stop_secs=$(since "$stopped")
exit_code=$(podman inspect --format '{{.State.ExitCode}}' "$NAME")
[[ "$exit_code" == 0 ]] || die "the server exited with $exit_code after SIGTERM (137: killed at the end of the grace period)"
[[ $(python3 -c "print(int($stop_secs < $GRACE))") == 1 ]] || die "stopping took $stop_secs s, not less than $GRACE s"

failed=0
for i in "${!signup_pids[@]}"; do
    n=$((i + 1))
    if ! wait "${signup_pids[$i]}" \
        || [[ "$(json_field user email <"$WORK/signup.$n.out" 2>/dev/null)" != "in-flight-$n@example.com" ]]; then
        echo "in-flight CreateUser $n was not answered with its user: $(cat "$WORK/signup.$n.out")" >&2
        failed=$((failed + 1))
    fi
done
((failed == 0)) || die "$failed of $IN_FLIGHT_SIGNUPS in-flight CreateUser calls were not answered"

# From the server's JSON log: the CreateUser calls answered (OK) after
# SIGTERM, split by whether the server had them before it or received them
# while draining.
podman logs "$NAME" >"$WORK/server.log" 2>&1
read -r across draining < <(python3 - "$WORK/server.log" <<'PY'
import json, sys
from datetime import datetime, timedelta
sigterm, across, draining = None, 0, 0
for line in open(sys.argv[1]):
    try:
        event = json.loads(line)
    except ValueError:
        continue
    at = datetime.fromisoformat(event["timestamp"])
    if event.get("message") == "received SIGTERM":
        sigterm = at
    elif (sigterm and event.get("message") == "rpc handled" and event.get("code") == "OK"
          and event.get("span", {}).get("otel.name") == "chatbot.v1.UserService/CreateUser"):
        if at - timedelta(milliseconds=event["duration_ms"]) < sigterm:
            across += 1
        else:
            draining += 1
print(across, draining) if sigterm else print(-1, 0)
PY
)
((across >= 0)) || die "the server's log does not show SIGTERM"
((across + draining > 0)) || die "every CreateUser was answered before SIGTERM; none overlapped the shutdown"
grep -q '"shut down"' "$WORK/server.log" || die "the server's log does not end with \"shut down\""
! grep -q 'abandoning remaining connections' "$WORK/server.log" || die "the server abandoned connections"
say "SIGTERM: readiness NOT_SERVING after $not_serving s; exit 0 after $stop_secs s (grace $GRACE s);" \
    "all $IN_FLIGHT_SIGNUPS CreateUser calls answered: $across in flight at SIGTERM, $draining received while draining"
total=$(since "$step_started")
if [[ $(python3 -c "print(int($total <= $BUDGET_SECS))") == 1 ]]; then
    say "passed in $total s (budget $BUDGET_SECS s with the base cached)"
else
    say "passed in $total s, over the $BUDGET_SECS s budget (a fresh base, or a busy machine?)"
fi
