#!/usr/bin/env python3
"""Prints a Markdown table of the latest `cargo bench --bench hotpaths` results
(mean time and throughput), read from $CARGO_TARGET_DIR/criterion (or target/criterion)."""
import json
import os
import sys

root = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
crit = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target")), "criterion")
if len(sys.argv) > 1:
    crit = sys.argv[1]
rows = []
for dirpath, _, files in os.walk(crit):
    if os.path.basename(dirpath) != "new" or "estimates.json" not in files:
        continue
    with open(os.path.join(dirpath, "benchmark.json")) as f:
        b = json.load(f)
    with open(os.path.join(dirpath, "estimates.json")) as f:
        mean_ns = json.load(f)["mean"]["point_estimate"]
    tp = b.get("throughput") or {}
    if "Elements" in tp:
        rate = f"{tp['Elements'] / (mean_ns / 1e9) / 1e6:.2f} M/s"
    elif "Bytes" in tp:
        rate = f"{tp['Bytes'] / (mean_ns / 1e9) / 1e6:.0f} MB/s"
    else:
        rate = ""
    rows.append((b["full_id"], f"{mean_ns / 1e6:.3f} ms", rate))
print("| benchmark | mean time | throughput |\n|---|---:|---:|")
for r in sorted(rows):
    print("| " + " | ".join(r) + " |")
