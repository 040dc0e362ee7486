#!/usr/bin/env python3
"""Plots bench/results/latest.jsonl (from bench/run.sh) into bench/results/latest.png:
fan-out throughput per server, and latency percentiles of paced fan-out and unicast.
Needs matplotlib (pip install matplotlib)."""
import json, pathlib, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

here = pathlib.Path(__file__).parent / "results"
rows = [json.loads(line) for line in (here / "latest.jsonl").read_text().splitlines() if line.strip()]
rows = [r for r in rows if not r.get("failed")]

fig, axes = plt.subplots(1, 3, figsize=(16, 5))
fanout = [r for r in rows if r["scenario"] == "fanout"]
axes[0].bar([r["server"] for r in fanout], [r["deliveries_per_s"] / 1000 for r in fanout], color="#4C72B0")
axes[0].set_title("Unthrottled fan-out, 1000 subscribers on 2 nodes")
axes[0].set_ylabel("thousand deliveries/s")
plt.setp(axes[0].get_xticklabels(), rotation=45, ha="right")

for axis, scenario, title in [(axes[1], "fanout-paced", "Paced fan-out, 50 msg/s (50k deliveries/s)"),
                              (axes[2], "unicast", "Unicast, 100 pairs, 1000 msg/s")]:
    chosen = [r for r in rows if r["scenario"] == scenario and "p50_ms" in r]
    width = 0.25
    for i, (key, label) in enumerate([("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9")]):
        axis.bar([x + i * width for x in range(len(chosen))], [r[key] for r in chosen], width, label=label)
    axis.set_xticks([x + width for x in range(len(chosen))], [r["server"] for r in chosen], rotation=45, ha="right")
    axis.set_title(title)
    # Logarithmic: a server that falls behind is seconds late, the rest a few milliseconds.
    axis.set_yscale("log")
    axis.set_ylabel("latency, ms (log scale)")
    axis.legend()

fig.tight_layout()
out = here / "latest.png"
fig.savefig(out, dpi=110)
print(f"wrote {out}", file=sys.stderr)
