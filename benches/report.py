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


def main():
    targets = sys.argv[1:] or ["target"]
    rows = load(targets)
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
