#!/usr/bin/env python3
"""Print the latest criterion results as markdown tables with ratios.

Usage: python3 benches/report.py [--earlier DIR] [TARGET_DIR ...]   (default: target)

With `--earlier DIR` (a directory holding a `criterion/` tree saved from an
earlier full run, e.g. `cp -r target/criterion runs/a/`), the scorecard
gets a column with that run's ratio beside this run's, and its verdict
covers both runs: a target is met only if both runs meet it ("split" when
one run meets it and the other does not, as 2-thread rows on a shared
2-vCPU machine can).

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


def median(rows, group, func, param):
    """The median time of one contender in one benchmark, or None."""
    return rows.get((group, param), {}).get(func)


def scorecard(rows, targets):
    """The performance issue's targets, each measured against its baseline
    from the same run: rows of (target, figure, baseline, ratio, goal,
    verdict), as strings."""
    out = []

    def ns(group, func, param):
        return median(rows, group, func, param)

    def versus(what, mine, base, base_name, goal, min_ratio):
        """A row comparing ours with a baseline: the ratio is base / mine,
        the target met when it is at least `min_ratio` (None: no target)."""
        if mine is None or base is None:
            out.append((what, "not measured", "", "", goal, "-"))
            return
        ratio = base / mine
        verdict = "-" if min_ratio is None else "met" if ratio >= min_ratio else "**missed**"
        out.append((what, fmt(mine), f"{fmt(base)} ({base_name})", f"{ratio:.2f}", goal, verdict))

    def vs_dash(group, mine_name, t, min_ratio):
        versus(f"`{group}` {t}", ns(group, mine_name, t), ns(group, "DashMap", t),
               "DashMap", f"DashMap / ours >= {min_ratio}", min_ratio)

    for op, facade_op in (("get", "get_status"), ("update", "update_status")):
        for n in ("100000", "1000000"):
            for t in ("1t", "2t"):
                vs_dash(f"core/{op}/{n}", "StatusTable", t, 2)
                vs_dash(f"facade/{facade_op}/{n}", "ConnectionManager", t, 2)
            if op == "get":
                group = f"core/get/{n}"
                versus(f"`{group}` 1t vs floor", ns(group, "StatusTable", "1t"),
                       ns(group, "HashMap (floor)", "1t"), "HashMap floor",
                       "floor / ours >= 0.67", 1 / 1.5)
    for n in ("1000", "100000", "1000000"):
        for t in ("1t", "2t"):
            vs_dash(f"core/churn/{n}", "StatusTable", t, 1)
    mem = memory(targets, "core_memory_1000000")
    if mem:
        ours, dash = mem["StatusTable"], mem["DashMap"]
        for i, kind in enumerate(("requested", "with malloc overhead")):
            ok = ours[i] <= dash[i] and ours[i] <= 64
            out.append((f"bytes per peer at 1M ({kind})", f"{ours[i]:.1f} B",
                        f"{dash[i]:.1f} B (DashMap)", f"{dash[i] / ours[i]:.2f}",
                        "<= DashMap and <= 64 B", "met" if ok else "**missed**"))
    else:
        out.append(("bytes per peer at 1M", "not measured", "", "", "<= DashMap and <= 64 B", "-"))
    for t, goal, min_ratio in (("1t", "(no target at 1t)", None), ("2t", "mutex / ours >= 3", 3)):
        versus(f"`pool/put_take` {t}", ns("pool/put_take", "ours", t),
               ns("pool/put_take", "mutex_map", t), "Mutex<HashMap>", goal, min_ratio)
    for t in ("1t", "2t"):
        small, big = ns("pool/reap_expired", "ours", f"1000/{t}"), ns("pool/reap_expired", "ours", f"1000000/{t}")
        if small and big:
            per_small, per_big = small / 1e3, big / 1e6
            growth = per_big / per_small
            out.append((f"`pool/reap_expired` per entry {t}, 1M vs 1k", fmt(per_big),
                        f"{fmt(per_small)} (ours at 1k)", f"{growth:.2f}",
                        "1M / 1k <= 1.25 (flat)", "met" if growth <= 1.25 else "**missed**"))
    one, two = ns("metrics/record_message", "connmgr", "1"), ns("metrics/record_message", "connmgr", "2")
    if one:
        out.append(("`metrics/record_message` 1t", fmt(one), "", "", "<= 10 ns",
                    "met" if one <= 10 else "**missed**"))
    if one and two:
        out.append(("`metrics/record_message` 2t vs 1t, per thread", fmt(two), f"{fmt(one)} (1t)",
                    f"{one / two:.2f}", "1t / 2t >= 1 (within 10% noise)",
                    "met" if two <= one * 1.1 else "**missed**"))
    tcp = "facade/connect_disconnect/tcp"
    versus("loopback TCP reconnect, pooled vs fresh dial", ns(tcp, "pooled", ""),
           ns(tcp, "fresh", ""), "fresh dial", "fresh / pooled >= 10", 10)
    return out


def budgets(rows):
    """What the 2x lookup and update targets leave, one thread: the time a
    call may take to meet them (DashMap's time / 2) beside the single-
    threaded `HashMap::get` floor and the keyed hash alone, all from the
    same run. An update must find its entry first, so the lookup floor and
    the hash bound it too. Rows of strings."""
    out = []
    for op in ("get", "update"):
        for n in ("100000", "1000000"):
            ours = median(rows, f"core/{op}/{n}", "StatusTable", "1t")
            dash = median(rows, f"core/{op}/{n}", "DashMap", "1t")
            floor = median(rows, f"core/get/{n}", "HashMap (floor)", "1t")
            hashing = median(rows, f"core/get/{n}", "hash only", "1t")
            if dash is None or floor is None or hashing is None:
                continue
            allowed = dash / 2
            if allowed < hashing:
                verdict = "less than hashing the key once"
            elif allowed < floor:
                verdict = "less than a single-threaded `HashMap::get`"
            else:
                verdict = "at or above the floor"
            out.append((f"`core/{op}/{n}` 1t", fmt(allowed), fmt(floor), fmt(hashing),
                        fmt(ours) if ours else "", verdict))
    return out


def print_budgets(rows):
    if not rows:
        return
    print("\n**What the 2x targets allow** (one thread, same run; time per call)\n")
    print("| target | allowed: DashMap / 2 | floor: `HashMap::get` | keyed hash alone | connmgr | the allowance is |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print("| " + " | ".join(r) + " |")


def print_scorecard(rows, earlier):
    """This run's scorecard; with `earlier` (another run's rows), that run's
    ratio beside each of ours."""
    print("\n**Targets** (performance issue; ratios are baseline / ours from the same run)\n")
    if earlier is None:
        print("| target | connmgr | baseline | ratio | goal | verdict |")
        print("| --- | --- | --- | --- | --- | --- |")
        for r in rows:
            print("| " + " | ".join(r) + " |")
        return
    before = {r[0]: r for r in earlier}

    def both(now, then):
        """The verdict over the two runs: a target counts as met only if
        both runs meet it."""
        if then is None or now == "-" or then == "-":
            return now
        if now == then:
            return now
        return "split: **missed** in one run"

    print("| target | connmgr | baseline | ratio | ratio, earlier full run | goal | verdict, both runs |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        prev = before.get(r[0])
        earlier_ratio = prev[3] if prev else ""
        verdict = both(r[5], prev[5] if prev else None)
        print("| " + " | ".join(r[:4] + (earlier_ratio, r[4], verdict)) + " |")


def main():
    args = sys.argv[1:]
    earlier = None
    if args[:1] == ["--earlier"]:
        if len(args) < 2:
            sys.exit("report.py: --earlier needs a directory holding a criterion/ tree")
        earlier_dir, args = args[1], args[2:]
        if not Path(earlier_dir, "criterion").is_dir():
            sys.exit(f"report.py: no criterion/ directory in {earlier_dir}")
        earlier = scorecard(load([earlier_dir]), [earlier_dir])
    targets = args or ["target"]
    rows = load(targets)
    print_scorecard(scorecard(rows, targets), earlier)
    print_budgets(budgets(rows))
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
