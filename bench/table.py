#!/usr/bin/env python3
"""Prints the Markdown table of BENCHMARKS.md from bench/results/latest.jsonl (bench/run.sh), or
from the results file given, with each fan-out figure as a ratio to the ceiling's and to
Centrifuge's of the same run."""
import json, pathlib, sys

source = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else pathlib.Path(__file__).parent / "results" / "latest.jsonl"
rows = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
by = {}
for r in rows:
    by[(r["server"], r["scenario"])] = r

names = {"ceiling": "ceiling (do-nothing, 1 process)", "embedded": "Switchboard embedded (2 nodes, 1 process)",
         "embedded-h0": "Switchboard embedded, history off", "redis": "Switchboard Redis (2 processes)",
         "redis-h0": "Switchboard Redis, history off", "mesh": "Switchboard mesh (2 processes)",
         "centrifuge": "Centrifuge 0.15, Redis broker (2 processes)", "socketio": "python-socketio 5.7, Redis manager (2 processes)",
         "node-ws": "Node ws 8.11, Redis pub/sub (2 processes)"}


def get(server, scenario, key):
    return by.get((server, scenario), {}).get(key)


def fanout(server):
    value = get(server, "fanout", "deliveries_per_s")
    if value is None:
        return "failed" if (server, "fanout") in by else ""
    text = f"{value / 1000:.0f}k"
    ratios = []
    for base in ("ceiling", "centrifuge"):
        reference = get(base, "fanout", "deliveries_per_s")
        if reference and base != server:
            ratios.append(f"{value / reference:.2f}x {base}")
    lost = get(server, "fanout", "lost")
    if lost:
        text += f", **{lost} lost**"
    return text + (f" ({', '.join(ratios)})" if ratios else "")


def batch(server):
    value = get(server + "-batch", "fanout", "deliveries_per_s")
    return f"{value / 1000:.0f}k" if value else ""


def latency(server, scenario):
    r = by.get((server, scenario))
    if not r or "p50_ms" not in r:
        return "failed" if r else ""
    text = f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} / {r['p999_ms']:.2f}"
    if r.get("lost"):
        text += f", **{r['lost']} lost**"
    return text


def churn(server):
    r = by.get((server, "churn"))
    if not r or "cycles_per_s" not in r:
        return "failed" if r else ""
    seen, expected = r["presence_events_seen"], r["presence_events_expected"]
    return f"{r['cycles_per_s']:.0f} ({'all' if seen == expected else f'{seen}/{expected}'})"


def idle(server):
    r = by.get((server, "idle"))
    if not r or "rss_per_connection_kib" not in r:
        return "failed" if r else ""
    return f"{r['rss_per_connection_kib']:.1f} KiB, {r['cpu_at_rest_percent']:.1f} % ({r['still_open']} open)"


print("| server | fan-out deliveries/s | `?batch=1` | paced 50 msg/s p50 / p99 / p99.9 ms "
      "| unicast 100 pairs p50 / p99 / p99.9 ms | churn cycles/s (presence) | idle 19k: RSS/conn, CPU at rest |")
print("|---|---|---|---|---|---|---|")
for server, name in names.items():
    if not any(key[0] == server for key in by):
        continue
    print(f"| {name} | {fanout(server)} | {batch(server)} | {latency(server, 'fanout-paced')} "
          f"| {latency(server, 'unicast')} | {churn(server)} | {idle(server)} |")
