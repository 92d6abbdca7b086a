#!/usr/bin/env bash
# Instructions per operation of src/cache.rs and of moka, under callgrind
# (valgrind). Each scenario runs at n=0 and at n, and the difference over n
# is the cost of one operation.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --quiet
count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/cache-vs-moka "$@" 2>&1 |
        awk '/Collected/ {print $4}'
}
for scenario in "hit 100000" "flood 200000" "invalidate 200"; do
    set -- $scenario
    for cache in own moka; do
        base=$(count "$cache" "$1" 0)
        total=$(count "$cache" "$1" "$2")
        echo "$cache $1: $(( (total - base) / $2 )) instructions per operation"
    done
done
