#!/usr/bin/env bash
# The upgrade from main's previous commit, tested: builds that commit's
# server (a release build in this repository's target directory, so only
# the crate itself compiles), then runs the ignored test
# `upgrade::a_database_of_the_previous_version_...` with it, which writes a
# row into every table with the previous version, migrates with this one,
# checks the data, and checks the previous version still serves on the new
# schema (README, Upgrades).
#
# "Previous commit" is HEAD's first parent (main's previous commit in CI's
# clone of main), or UPGRADE_FROM=<commit>. A shallow clone is deepened by
# one commit to find it; only a true first commit skips (exit 0, saying
# why). It fails unless the test ran and passed (a renamed test would
# otherwise match nothing and pass). It leaves target/release holding the previous version's
# binary: run it after everything that uses this version's release build.
# Needs PostgreSQL at 127.0.0.1:5432 (user postgres, trust).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO_ROOT=$(pwd)

from=${UPGRADE_FROM:-}
if [[ -z $from ]]; then
    if [[ $(git rev-parse --is-shallow-repository) == true ]]; then
        git fetch --quiet --deepen=1 ||
            { echo "upgrade_check: a shallow clone whose previous commit cannot be fetched; set UPGRADE_FROM" >&2; exit 1; }
    fi
    if ! from=$(git rev-parse --verify --quiet 'HEAD^1^{commit}'); then
        echo "upgrade_check: HEAD is the first commit; nothing to upgrade from"
        exit 0
    fi
fi
echo "upgrade_check: from $(git log -1 --format='%h %s' "$from")"

work=$(mktemp -d)
cleanup() {
    git worktree remove --force "$work/source" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
git worktree add --detach --quiet "$work/source" "$from"
(cd "$work/source" && CARGO_TARGET_DIR="$REPO_ROOT/target" cargo build --release --quiet --bin chatbot-backend)
# Kept under target/ so the test can be rerun by hand.
mkdir -p target/upgrade-from
cp target/release/chatbot-backend target/upgrade-from/chatbot-backend

UPGRADE_FROM_BINARY="$REPO_ROOT/target/upgrade-from/chatbot-backend" \
    cargo test --test api -- --ignored --exact \
    upgrade::a_database_of_the_previous_version_migrates_serves_the_same_data_and_still_serves_it \
    | tee "$work/test.log"
if ! grep -q '^test result: ok\. 1 passed' "$work/test.log"; then
    echo "upgrade_check: the upgrade test did not run (renamed?); nothing was checked" >&2
    exit 1
fi
