#!/usr/bin/env python3
"""Print the latest criterion results as markdown tables with ratios.

Usage: python3 benches/report.py [TARGET_DIR ...]   (default: target)

Reads <target>/criterion/**/new/{benchmark,estimates}.json, as written by
`cargo bench -p connmgr-benches`. Each row is one benchmark group and
parameter (size, threads); each column one contender, median time per
operation. The ratio columns are baseline / ours: above 1 means connmgr is
faster. Nothing here is typed in by hand.
"""
import json
import sys
from collections import OrderedDict
from pathlib import Path

OURS = {"StatusTable", "ConnectionManager", "ours", "connmgr"}


def fmt(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.1f} ns"


def load(targets):
    rows = OrderedDict()
    for target in targets:
        for bench in sorted(Path(target, "criterion").glob("**/new/benchmark.json")):
            meta = json.loads(bench.read_text())
            est = json.loads((bench.parent / "estimates.json").read_text())
            ns = est["median"]["point_estimate"]
            group = meta["group_id"]
            func = meta["function_id"] or ""
            param = meta.get("value_str") or ""
            rows.setdefault((group, param), OrderedDict())[func] = ns
    return rows


def memory(targets, name):
    for target in targets:
        path = Path(target, "criterion", f"{name}.json")
        if path.exists():
            return json.loads(path.read_text())
    return None


def scorecard(rows, targets):
    """The performance issue's targets, each measured against its baseline
    from the same run: figure, baseline, ratio, target, verdict."""
    out = []

    def ns(group, func, param):
        return rows.get((group, param), {}).get(func)

    def line(what, mine, base, base_name, ratio, goal, ok):
        if mine is None or base is None:
            out.append(f"| {what} | not measured | | | {goal} | - |")
            return
        verdict = "-" if ok is None else "met" if ok else "**missed**"
        out.append(
            f"| {what} | {fmt(mine)} | {fmt(base)} ({base_name}) | {ratio:.2f} | {goal} | {verdict} |"
        )

    for n in ("100000", "1000000"):
        for t in ("1t", "2t"):
            for group, mine_name in ((f"core/get/{n}", "StatusTable"), (f"facade/get_status/{n}", "ConnectionManager")):
                mine, dash = ns(group, mine_name, t), ns(group, "DashMap", t)
                ratio = dash / mine if mine and dash else 0
                line(f"`{group}` {t}", mine, dash, "DashMap", ratio, "DashMap / ours >= 2", ratio >= 2)
        mine, floor = ns(f"core/get/{n}", "StatusTable", "1t"), ns(f"core/get/{n}", "HashMap (floor)", "1t")
        ratio = floor / mine if mine and floor else 0
        line(f"`core/get/{n}` 1t vs floor", mine, floor, "HashMap floor", ratio, "floor / ours >= 0.67", ratio >= 1 / 1.5)
    for n in ("100000", "1000000"):
        for t in ("1t", "2t"):
            for group, mine_name in ((f"core/update/{n}", "StatusTable"), (f"facade/update_status/{n}", "ConnectionManager")):
                mine, dash = ns(group, mine_name, t), ns(group, "DashMap", t)
                ratio = dash / mine if mine and dash else 0
                line(f"`{group}` {t}", mine, dash, "DashMap", ratio, "DashMap / ours >= 2", ratio >= 2)
    for n in ("1000", "100000", "1000000"):
        for t in ("1t", "2t"):
            group = f"core/churn/{n}"
            mine, dash = ns(group, "StatusTable", t), ns(group, "DashMap", t)
            ratio = dash / mine if mine and dash else 0
            line(f"`{group}` {t}", mine, dash, "DashMap", ratio, "DashMap / ours >= 1", ratio >= 1)
    mem = memory(targets, "core_memory_1000000")
    if mem:
        ours, dash = mem["StatusTable"], mem["DashMap"]
        for i, kind in enumerate(("requested", "with malloc overhead")):
            ok = ours[i] <= dash[i] and ours[i] <= 64
            out.append(
                f"| bytes per peer at 1M ({kind}) | {ours[i]:.1f} B | {dash[i]:.1f} B (DashMap) | {dash[i] / ours[i]:.2f} | <= DashMap and <= 64 B | {'met' if ok else '**missed**'} |"
            )
    else:
        out.append("| bytes per peer at 1M | not measured | | | <= DashMap and <= 64 B | - |")
    for t in ("1t", "2t"):
        mine, mutex = ns("pool/put_take", "ours", t), ns("pool/put_take", "mutex_map", t)
        ratio = mutex / mine if mine and mutex else 0
        goal = "mutex / ours >= 3" if t == "2t" else "(no target at 1t)"
        line(f"`pool/put_take` {t}", mine, mutex, "Mutex<HashMap>", ratio, goal, None if t == "1t" else ratio >= 3)
    for t in ("1t", "2t"):
        small, big = ns("pool/reap_expired", "ours", f"1000/{t}"), ns("pool/reap_expired", "ours", f"1000000/{t}")
        if small and big:
            per_small, per_big = small / 1e3, big / 1e6
            growth = per_big / per_small
            out.append(
                f"| `pool/reap_expired` per entry {t}, 1M vs 1k | {fmt(per_big)} | {fmt(per_small)} (ours at 1k) | {growth:.2f} | 1M / 1k <= 1.25 (flat) | {'met' if growth <= 1.25 else '**missed**'} |"
            )
    one, two = ns("metrics/record_message", "connmgr", "1"), ns("metrics/record_message", "connmgr", "2")
    if one:
        out.append(f"| `metrics/record_message` 1t | {fmt(one)} | | | <= 10 ns | {'met' if one <= 10 else '**missed**'} |")
    if one and two:
        out.append(
            f"| `metrics/record_message` 2t vs 1t, per thread | {fmt(two)} | {fmt(one)} (1t) | {one / two:.2f} | 1t / 2t >= 1 (within 10% noise) | {'met' if two <= one * 1.1 else '**missed**'} |"
        )
    pooled = ns("facade/connect_disconnect/tcp", "pooled", "")
    fresh = ns("facade/connect_disconnect/tcp", "fresh", "")
    line("loopback TCP reconnect, pooled vs fresh dial", pooled, fresh, "fresh dial", fresh / pooled if pooled and fresh else 0, "fresh / pooled >= 10", bool(pooled and fresh and fresh / pooled >= 10))
    print("\n**Targets** (performance issue; ratios are baseline / ours from the same run)\n")
    print("| target | connmgr | baseline | ratio | goal | verdict |")
    print("| --- | --- | --- | --- | --- | --- |")
    for l in out:
        print(l)


def main():
    targets = sys.argv[1:] or ["target"]
    rows = load(targets)
    scorecard(rows, targets)
    families = OrderedDict()
    for (group, param), funcs in rows.items():
        family = group.split("/")[0] + "/" + group.split("/")[1]
        families.setdefault(family, []).append((group, param, funcs))
    for family, entries in families.items():
        contenders = []
        for _, _, funcs in entries:
            for f in funcs:
                if f not in contenders:
                    contenders.append(f)
        ours = [c for c in contenders if c in OURS]
        others = [c for c in contenders if c not in OURS]
        print(f"\n**{family}** (median time per operation)\n")
        head = ["benchmark"] + contenders + [f"{o} / ours" for o in others if ours]
        print("| " + " | ".join(head) + " |")
        print("|" + " --- |" * len(head))
        for group, param, funcs in entries:
            name = group[len(family):].strip("/")
            label = "/".join(p for p in (name, param) if p) or "-"
            cells = [label] + [fmt(funcs[c]) if c in funcs else "" for c in contenders]
            if ours:
                mine = next((funcs[c] for c in ours if c in funcs), None)
                for o in others:
                    cells.append(f"{funcs[o] / mine:.2f}" if mine and o in funcs else "")
            print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
