#!/usr/bin/env python3
"""Prints the C benchmark table (markdown) from criterion's results of `cargo bench --bench alloc`:
median time per pair with its 95% confidence interval, and the ratio directmem / calloc."""
import json, pathlib, sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")

def median(group, name):
    f = root / group / name / "new" / "estimates.json"
    if not f.exists():
        return None
    m = json.loads(f.read_text())["median"]
    return m["point_estimate"], m["confidence_interval"]["lower_bound"], m["confidence_interval"]["upper_bound"]

def show(ns):
    p, lo, hi = ns
    unit, div = ("µs", 1e3) if p >= 1e3 else ("ns", 1)
    return f"{p / div:.1f} {unit} [{lo / div:.1f}-{hi / div:.1f}]"

print("| threads | size | directmem | calloc + free | malloc + free | directmem / calloc |")
print("|---|---|---|---|---|---|")
for group, threads in (("alloc_free", 1), ("alloc_free_2_threads", 2)):
    for size in ("64B", "4KiB", "64KiB", "1MiB", "64MiB"):
        g = f"{group}/{size}".replace("/", "_")
        dm, ca, ma = (median(g, n) for n in ("directmem", "calloc", "malloc"))
        if dm and ca and ma:
            print(f"| {threads} | {size} | {show(dm)} | {show(ca)} | {show(ma)} | {dm[0] / ca[0]:.2f} |")
