#!/usr/bin/env python3
"""Prints BENCHMARKS.md's table from benches/run.sh's target/bench/results.jsonl."""
import json
import sys

path = sys.argv[1] if len(sys.argv) > 1 else "target/bench/results.jsonl"
rows = [json.loads(line) for line in open(path) if line.strip()]
pgbench = {r["concurrency"]: r["throughput_rps"] for r in rows if r.get("rpc") == "pgbench"}
metrics = {r["metric"]: r["value"] for r in rows if "metric" in r}

print("| RPC | callers | req/s (OK) | ratio to pgbench | p50 ms | p90 ms | p99 ms | max ms | server CPU µs/req |")
print("|---|---|---|---|---|---|---|---|---|")
for c, tps in sorted(pgbench.items()):
    print(f"| pgbench -S -M prepared | {c} | {tps:,.0f} | 1.00 | | | | | |")
spend = {r["concurrency"]: r["throughput_rps"] for r in rows if r.get("rpc") == "pgbench-spend-update"}
for c, tps in sorted(spend.items()):
    ratio = tps / pgbench[c] if c in pgbench else 0
    print(f"| pgbench: spend UPDATE over 1,000 rows | {c} | {tps:,.0f} | {ratio:.2f} | | | | | |")
for r in rows:
    if "rpc" not in r or r["rpc"] in ("pgbench", "pgbench-spend-update"):
        continue
    name = r["rpc"] + (f" ({r['label']})" if r.get("label") else "")
    ratio = r["ok_throughput_rps"] / pgbench[r["concurrency"]] if r["concurrency"] in pgbench else 0
    lat = r["latency_ms"]
    print(
        f"| {name} | {r['concurrency']} | {r['ok_throughput_rps']:,.0f} | {ratio:.2f} | "
        f"{lat['p50']:.2f} | {lat['p90']:.2f} | {lat['p99']:.2f} | {lat['max']:.1f} | "
        f"{r.get('server_cpu_us_per_request', '')} |"
    )
print()
if "startup_ms" in metrics:
    print(f"- start-up to serving (migrations applied): {metrics['startup_ms']} ms")
if "peak_rss_kb" in metrics:
    print(f"- server peak RSS over the whole sitting: {metrics['peak_rss_kb'] / 1024:.1f} MiB")
