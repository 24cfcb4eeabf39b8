#!/usr/bin/env python3
"""Write BENCHMARKS.md: the latest criterion results as markdown tables with ratios.

Usage: python3 benches/report.py [--out FILE] [--earlier DIR] [TARGET_DIR ...]   (default: target)

The page starts with the machine (CPU model, cores, memory), the toolchain
(`rustc --version`), the commands that produced the results and the date
they were written, then the scorecard and a table per benchmark family.
With `--out FILE` the page goes to FILE (the repository's copy is
BENCHMARKS.md at the root), otherwise to standard output.

With `--earlier DIR` (a directory holding a `criterion/` tree saved from an
earlier full run, e.g. `mkdir -p runs/a && cp -rp target/criterion runs/a/`;
`-p` keeps the files' modification times, which the staleness check below
reads), the scorecard gets a column with that run's ratio beside this run's,
and its verdict covers both runs: a target is met only if both runs measure
it and both meet it ("split" when one run meets it and the other does not,
as 2-thread rows on a shared 2-vCPU machine can; "not proven (one run)"
when only one run measured it and met it).

Reads <target>/criterion/**/new/{benchmark,estimates}.json, as written by
`cargo bench -p connmgr-benches`, and the figures the benches write beside
them (<target>/criterion/core_memory_1000000.json and
core_memory_churn_1000000.json). With several TARGET_DIRs a later one's
result for a benchmark replaces an earlier one's. Each row is one benchmark
group and parameter (size, threads); each column one contender, median time
per operation. In the per-group tables the ratio columns are
baseline / ours: above 1 means connmgr is faster. In the scorecard each
row's goal names the quotient in its ratio column: mostly baseline / ours,
but `pool/reap_expired` gives 1M / 1k per-entry time (lower is better) and
`metrics/record_message` 1t / 2t. Every scorecard row is printed, as
"not measured" when its results are missing, so the rows of two runs pair
up; a run without `core/reconnect` predates it, and its `core/churn`
(recycled keys then) is not paired with a newer run's (never-seen peers).
Nothing here is typed in by hand.

Under the scorecard it prints, per run directory, the oldest and newest
modification time of the result files it used, and warns when they span
more than 3 hours (results of different runs mixed). It exits non-zero
when a directory has no criterion/ tree or no results in it.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path

OURS = {"StatusTable", "ConnectionManager", "ours", "connmgr"}

# Results of one run written further apart than this are taken for a mix
# of runs (a full `cargo bench -p connmgr-benches` takes about 7 minutes).
MAX_SPAN_S = 3 * 3600

# The facade's floor target: within 1.5x of a single-threaded HashMap::get.
FLOOR_FACTOR = 1.5

# The status table's floor target: a single-threaded HashMap::get / ours.
FLOOR_RATIO = 0.8

# The concurrent maps the status table is held to: its ratio is the
# fastest (or, for memory, the leanest) of them over ours.
BEST = ("DashMap", "papaya", "scc")

# Verdict states; rendered by `render`.
MET, MISSED, NO_TARGET, UNMEASURED, NOT_PROVEN = "met", "missed", "no target", "unmeasured", "not proven"


def fmt(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.1f} ns"


def warn(msg):
    print(f"report.py: {msg}", file=sys.stderr)


def criterion_dir(target, role):
    """<target>/criterion, or exit non-zero: a missing or empty tree would
    otherwise print "not measured" everywhere."""
    crit = Path(target, "criterion")
    if not crit.is_dir():
        sys.exit(f"report.py: {role} {target}: no criterion/ directory at {crit} "
                 "(run `cargo bench -p connmgr-benches`, or pass the directory holding criterion/)")
    if next(crit.glob("**/new/benchmark.json"), None) is None:
        sys.exit(f"report.py: {role} {target}: {crit} holds no criterion results "
                 "(no */new/benchmark.json under it)")
    return crit


def load(targets):
    """Median time per (group, param) and contender, which file each came
    from, and how many results each target had: ({(group, param): {func: ns}},
    {(group, param, func): (target, path)}, {target: count})."""
    rows = OrderedDict()
    used = {}
    counts = {}
    for target in targets:
        found = 0
        for bench in sorted(Path(target, "criterion").glob("**/new/benchmark.json")):
            est_path = bench.parent / "estimates.json"
            try:
                meta = json.loads(bench.read_text())
                est = json.loads(est_path.read_text())
                ns = float(est["median"]["point_estimate"])
                group = meta["group_id"]
            except (OSError, ValueError, KeyError, TypeError) as e:
                warn(f"skipping {bench.parent}: {e!r}")
                continue
            func = meta.get("function_id") or ""
            param = meta.get("value_str") or ""
            key = (group, param, func)
            if key in used and used[key][0] == target:
                warn(f"{group}/{func}/{param} found twice in {target}: "
                     f"{used[key][1]} and {est_path}; using the latter")
            rows.setdefault((group, param), OrderedDict())[func] = ns
            used[key] = (target, est_path)
            found += 1
        if not found:
            sys.exit(f"report.py: {target}: no readable criterion results in {Path(target, 'criterion')}")
        counts[target] = counts.get(target, 0) + found
    return rows, used, counts


class Run:
    """The results of one run: criterion's medians from its directories,
    and the bench-written figure files, recording every file used."""

    def __init__(self, targets, role):
        self.targets = list(dict.fromkeys(targets))
        self.role = role
        for t in self.targets:
            criterion_dir(t, role)
        self.rows, self.used, self.counts = load(self.targets)
        self.figure_files = {}  # name -> (target, path)
        self._figures = {}

    def figure(self, name):
        """<target>/criterion/<name>.json as a dict (a later target's
        replacing an earlier one's, as for the medians), or None."""
        if name in self._figures:
            return self._figures[name]
        data = None
        for target in self.targets:
            path = Path(target, "criterion", f"{name}.json")
            if not path.exists():
                continue
            try:
                loaded = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                warn(f"ignoring {path}: {e!r}")
                continue
            if not isinstance(loaded, dict):
                warn(f"ignoring {path}: not a JSON object")
                continue
            data = loaded
            self.figure_files[name] = (target, path)
        self._figures[name] = data
        return data

    def files(self, target=None):
        """The result files used, from `target` or from all of them, as
        (criterion directory, path) pairs."""
        pairs = list(self.used.values()) + list(self.figure_files.values())
        return [(Path(t, "criterion"), p) for t, p in pairs if target is None or t == target]


def median(rows, group, func, param):
    """The median time of one contender in one benchmark, or None."""
    return rows.get((group, param), {}).get(func)


def by_id(rows, group, ident):
    """The median of the benchmark `group`/`ident`, matching `ident` as
    criterion names its directory ("/" as "_"), so "ours/dense_1000_1t"
    finds function "ours" with value "dense_1000/1t" or "dense/1000/1t"."""
    want = ident.replace("/", "_")
    for (g, param), funcs in rows.items():
        if g != group:
            continue
        for func, ns in funcs.items():
            if "/".join(p for p in (func, param) if p).replace("/", "_") == want:
                return ns
    return None


def num(d, *path):
    """A positive number at d[path...], or None."""
    for p in path:
        try:
            d = d[p]
        except (KeyError, IndexError, TypeError):
            return None
    if isinstance(d, bool) or not isinstance(d, (int, float)) or d <= 0:
        return None
    return float(d)


def churn_recycles_keys(rows):
    """Whether this run's `core/churn` is the old benchmark (recycled keys,
    now `core/reconnect`): runs from before `core/reconnect` existed."""
    groups = {g for g, _ in rows}
    return (any(g.startswith("core/churn/") for g in groups)
            and not any(g.startswith("core/reconnect/") for g in groups))


class Row:
    """One scorecard row: `name` is what the table shows and what rows of
    two runs are matched by (`key` when the same name means a different
    benchmark in the two runs)."""

    def __init__(self, name, figure, baseline, ratio, goal, verdict, detail="", key=None):
        self.name, self.figure, self.baseline, self.ratio = name, figure, baseline, ratio
        self.goal, self.verdict, self.detail = goal, verdict, detail
        self.key = key or name

    def cells(self):
        return (self.name, self.figure, self.baseline, self.ratio)


def render(row):
    return {MET: "met", MISSED: "**missed**", NO_TARGET: "-", UNMEASURED: "-",
            NOT_PROVEN: f"not proven ({row.detail})"}[row.verdict]


def scorecard(run):
    """The project's performance targets, each measured against its baseline
    from the same run: a list of `Row`s. Every row is emitted whether or not
    it was measured, under a name that does not depend on the results, so
    the rows of two runs pair up."""
    rows = run.rows
    out = []

    def ns(group, func, param):
        return median(rows, group, func, param)

    def add(*args, **kw):
        out.append(Row(*args, **kw))

    def versus(what, mine, base, base_name, goal, min_ratio, key=None):
        """A row comparing ours with a baseline: the ratio is base / mine,
        the target met when it is at least `min_ratio` (None: no target)."""
        if not mine or not base:
            add(what, "not measured", "", "", goal, NO_TARGET if min_ratio is None else UNMEASURED, key=key)
            return
        ratio = base / mine
        verdict = NO_TARGET if min_ratio is None else MET if ratio >= min_ratio else MISSED
        add(what, fmt(mine), f"{fmt(base)} ({base_name})", f"{ratio:.2f}", goal, verdict, key=key)

    def vs_dash(group, mine_name, t, min_ratio, key=None):
        goal = f"DashMap / ours >= {min_ratio}" if min_ratio else "DashMap / ours (no target)"
        versus(f"`{group}` {t}", ns(group, mine_name, t), ns(group, "DashMap", t),
               "DashMap", goal, min_ratio, key=key)

    # The status table against the fastest of the best concurrent maps
    # (DashMap, papaya, scc), each ratio from this run: best / ours.
    def vs_best(what, group, t, min_ratio, mine_name="StatusTable", key=None):
        goal = f"best of {'/'.join(BEST)} / ours >= {min_ratio}"
        found = [(ns(group, b, t), b) for b in BEST if ns(group, b, t)]
        base, name = min(found) if found else (None, "")
        versus(what, ns(group, mine_name, t), base, name, goal, min_ratio, key=key)

    # A run from before `core/reconnect` measured recycled keys under
    # `core/churn`: its churn rows get their own keys, so they never pair
    # with a newer run's (never-seen peers) under `--earlier`.
    recycled = churn_recycles_keys(rows)

    for op, targets in (("get", (0.9, 1.2)), ("update", (1.0, 1.2)), ("churn", (1.0, 1.0))):
        for n in ("100000", "1000000"):
            for t, min_ratio in zip(("1t", "2t"), targets):
                what = f"`core/{op}/{n}` {t}"
                key = f"{what} (recycled keys)" if op == "churn" and recycled else None
                vs_best(what, f"core/{op}/{n}", t, min_ratio, key=key)
            if op == "get":
                core = f"core/get/{n}"
                versus(f"`{core}` 1t vs floor", ns(core, "StatusTable", "1t"),
                       ns(core, "HashMap (floor)", "1t"), "HashMap floor",
                       f"floor / ours >= {FLOOR_RATIO}", FLOOR_RATIO)
    for t in ("1t", "2t"):
        vs_best(f"`core/get_many/1000000` {t}, per key", "core/get_many/1000000", t, 2.0)
    for n in ("1000", "100000", "1000000"):
        for t in ("1t", "2t"):
            vs_dash(f"core/reconnect/{n}", "StatusTable", t, None)
    # The facade's own targets, against DashMap and the floor.
    for op, facade_op in (("get", "get_status"), ("update", "update_status")):
        for n in ("100000", "1000000"):
            for t in ("1t", "2t"):
                vs_dash(f"facade/{facade_op}/{n}", "ConnectionManager", t, 2)
            if op == "get":
                core, facade = f"core/get/{n}", f"facade/get_status/{n}"
                floor = ns(core, "HashMap (floor)", "1t")
                floor_ratio = 1 / FLOOR_FACTOR
                for t in ("1t", "2t"):
                    versus(f"`{facade}` {t} vs floor (`{core}`'s 1t floor)",
                           ns(facade, "ConnectionManager", t), floor,
                           f"HashMap floor from `{core}` 1t",
                           f"floor / ours >= {floor_ratio:.3f} (within {FLOOR_FACTOR:g}x)", floor_ratio)

    mem_goal = f"ours <= 64 B and <= the leanest of {'/'.join(BEST)}"

    def mem_row(what, ours, base, base_name, judged=True):
        goal = mem_goal if judged else f"{base_name} / ours (no target)"
        if ours is None or base is None:
            add(what, "not measured", "", "", goal, UNMEASURED if judged else NO_TARGET)
            return
        verdict = NO_TARGET if not judged else MET if ours <= base and ours <= 64 else MISSED
        add(what, f"{ours:.1f} B", f"{base:.1f} B ({base_name})", f"{base / ours:.2f}", goal, verdict)

    mem = run.figure("core_memory_1000000") or {}
    for i, kind in enumerate(("requested", "with malloc overhead")):
        found = [(num(mem, b, i), b) for b in BEST if num(mem, b, i)]
        base, name = min(found) if found else (None, "")
        mem_row(f"bytes per peer at 1M ({kind})", num(mem, "StatusTable", i), base, name)
    churned = run.figure("core_memory_churn_1000000") or {}
    if churned and churned.get("peers") not in (None, 1_000_000):
        warn(f"core_memory_churn_1000000.json says peers = {churned.get('peers')!r}, not 1000000")
    for state in ("peak", "end"):
        for suffix, kind in (("", "requested"), ("_with_overhead", "with malloc overhead")):
            mem_row(f"bytes per peer at 1M after churn, {state} ({kind})",
                    num(churned, f"ours_{state}{suffix}"), num(churned, f"dashmap_{state}{suffix}"),
                    "DashMap", judged=False)

    for t, goal, min_ratio in (("1t", "mutex / ours (no target at 1t)", None), ("2t", "mutex / ours >= 3", 3)):
        versus(f"`pool/put_take` {t}", ns("pool/put_take", "ours", t),
               ns("pool/put_take", "mutex_map", t), "Mutex<HashMap>", goal, min_ratio)

    flat = 1.25
    for t in ("1t", "2t"):
        growths = []
        for prefix, density in (("", "1 connection per key"), ("dense_", "16 connections per key")):
            small = by_id(rows, "pool/reap_expired", f"ours/{prefix}1000_{t}")
            big = by_id(rows, "pool/reap_expired", f"ours/{prefix}1000000_{t}")
            what = f"`pool/reap_expired` per entry {t}, 1M vs 1k ({density})"
            goal = f"1M / 1k per entry <= {flat} (flat; lower is better)"
            if not small or not big:
                add(what, "not measured", "", "", goal, UNMEASURED)
                growths.append(None)
                continue
            per_small, per_big = small / 1e3, big / 1e6
            growth = per_big / per_small
            growths.append(growth)
            add(what, fmt(per_big), f"{fmt(per_small)} (ours at 1k)", f"{growth:.2f}", goal,
                MET if growth <= flat else MISSED)
        what = f"`pool/reap_expired` {t} flat at both key densities"
        goal = f"the larger 1M / 1k of the two <= {flat} (lower is better)"
        measured = [g for g in growths if g is not None]
        if not measured:
            add(what, "not measured", "", "", goal, UNMEASURED)
            continue
        worst = max(measured)
        if worst > flat:
            verdict, detail = MISSED, ""
        elif len(measured) < len(growths):
            missing = "dense" if growths[1] is None else "1 per key"
            verdict, detail = NOT_PROVEN, f"{missing} not measured"
        else:
            verdict, detail = MET, ""
        add(what, "", "", f"{worst:.2f}", goal, verdict, detail)

    one, two = ns("metrics/record_message", "connmgr", "1"), ns("metrics/record_message", "connmgr", "2")
    if one:
        add("`metrics/record_message` 1t", fmt(one), "", "", "<= 10 ns (no ratio)",
            MET if one <= 10 else MISSED)
    else:
        add("`metrics/record_message` 1t", "not measured", "", "", "<= 10 ns (no ratio)", UNMEASURED)
    noise = 1.1
    goal = f"1t / 2t >= {1 / noise:.3f} (2t per thread within 10% of 1t)"
    what = "`metrics/record_message` 2t vs 1t, per thread"
    if one and two:
        add(what, fmt(two), f"{fmt(one)} (1t)", f"{one / two:.2f}", goal,
            MET if two <= one * noise else MISSED)
    else:
        add(what, "not measured", "", "", goal, UNMEASURED)
    tcp = "facade/connect_disconnect/tcp"
    versus("loopback TCP reconnect, pooled vs fresh dial", ns(tcp, "pooled", ""),
           ns(tcp, "fresh", ""), "fresh dial", "fresh / pooled >= 10", 10)
    keys = [r.key for r in out]
    assert len(keys) == len(set(keys)), "scorecard row keys must be unique"
    return out


def both(now, then):
    """The verdict over the two runs: a target counts as met only if both
    runs measure it and both meet it. `then` is None when the earlier run
    has no such row."""
    a, b = now.verdict, then.verdict if then else UNMEASURED
    if NO_TARGET in (a, b) or a == b == UNMEASURED:
        return "-"
    if MISSED in (a, b):
        other = b if a == MISSED else a
        if other == MISSED:
            return "**missed**"
        if other == MET:
            return "split: **missed** in one run"
        if other == NOT_PROVEN:
            return "**missed** in one run, not proven in the other"
        return "**missed** (only one run measured it)"
    if a == b == MET:
        return "met"
    if a == NOT_PROVEN:
        return render(now)
    if b == NOT_PROVEN:
        return render(then)
    return "not proven (one run)"


RATIO_NOTE = ("The ratio column is the quotient named at the start of each row's goal. "
              "Mostly that is baseline / ours (above 1: connmgr faster); the exceptions are "
              "`pool/reap_expired` (1M / 1k time per entry: lower is better) and "
              "`metrics/record_message` 2t (1t / 2t).")


def print_scorecard(rows, earlier, notes=()):
    """This run's scorecard; with `earlier` (another run's rows), that run's
    ratio beside each of ours."""
    print("\n## Scorecard\n")
    print("Each ratio is from one run, defined in its row's goal.\n")
    if earlier is None:
        print("| target | connmgr | baseline | ratio | goal | verdict |")
        print("| --- | --- | --- | --- | --- | --- |")
        for r in rows:
            print("| " + " | ".join(r.cells() + (r.goal, render(r))) + " |")
    else:
        before = {r.key: r for r in earlier}
        print("| target | connmgr | baseline | ratio | ratio, earlier full run | goal | verdict, both runs |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for r in rows:
            prev = before.get(r.key)
            earlier_ratio = prev.ratio if prev else ""
            print("| " + " | ".join(r.cells() + (earlier_ratio, r.goal, both(r, prev))) + " |")
    print(f"\n{RATIO_NOTE}")
    for note in notes:
        print(f"\n{note}")


def when(t):
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def span_text(seconds):
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def print_spans(runs):
    """Under the scorecard: per run directory, when the result files used
    were written (oldest to newest), with a loud warning when they span
    more than MAX_SPAN_S (stale results of an older run mixed in)."""
    print("\n**Result files used** (modification times, UTC; a run's files should be minutes apart)\n")
    warnings = []

    def report(label, files, replaced=0):
        note = f" ({replaced} more replaced by a later directory's)" if replaced else ""
        if not files:
            print(f"- {label}: no result files used (all {replaced} replaced by a later directory's)")
            return
        paths = [p for _, p in files]
        group_dir = {p: p.relative_to(crit).parts[0] for crit, p in files}
        stamped = sorted((p.stat().st_mtime, p) for p in paths)
        (first, oldest), (last, newest) = stamped[0], stamped[-1]
        span = last - first
        line = f"- {label}: {len(paths)} files{note}, {when(first)} to {when(last)} (span {span_text(span)})"
        if span < 60 and len(paths) > 20:
            line += "; all within a minute: if this is a copy made without `cp -p`, these are copy times"
        print(line)
        if span > MAX_SPAN_S:
            stale = [p for m, p in stamped if last - m > MAX_SPAN_S]
            dirs = sorted({group_dir[p] for p in stale})
            msg = (f"{label}: result files span {span_text(span)}, more than {MAX_SPAN_S // 3600} hours: "
                   f"results from different runs are probably mixed in (oldest: {oldest}, {when(first)}; "
                   f"newest: {newest}, {when(last)}; {len(stale)} of {len(paths)} files are over "
                   f"{MAX_SPAN_S // 3600} hours older than the newest, in: {', '.join(dirs[:12])}"
                   f"{', ...' if len(dirs) > 12 else ''})")
            warnings.append(msg)

    for run in runs:
        for target in run.targets:
            estimates = sum(1 for t, _ in run.used.values() if t == target)
            report(f"{run.role} `{Path(target, 'criterion')}`", run.files(target),
                   run.counts.get(target, 0) - estimates)
        if sum(1 for t in run.targets if run.files(t)) > 1:
            report(f"{run.role}, all {len(run.targets)} directories together", run.files())
    for msg in warnings:
        print(f"\n**WARNING: {msg}**")
        warn(f"WARNING: {msg}")


def machine():
    """CPU model, cores and memory of this machine, as one line."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f", {int(line.split()[1]) / 2**20:.0f} GiB memory"
                break
    except (OSError, ValueError, IndexError):
        pass
    return f"{model}, {os.cpu_count()} logical CPUs{mem}, {platform.system()} {platform.release()}"


def toolchain():
    try:
        return subprocess.run(["rustc", "--version"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (rustc not found)"


def print_header(runs):
    """Title, machine, toolchain, commands and date: what a reader needs to
    reproduce the page."""
    newest = max((p.stat().st_mtime for run in runs for _, p in run.files()), default=None)
    print("# Benchmarks\n")
    print("Written by `benches/report.py` from criterion's results; do not edit by hand.\n")
    print(f"- **Measured:** {when(newest) + ' UTC' if newest else 'unknown'} (newest result file)")
    print(f"- **Machine:** {machine()}")
    print(f"- **Toolchain:** {toolchain()}, release profile")
    print("- **Commands:**\n")
    print("```sh")
    print("rm -rf target/criterion && cargo bench -p connmgr-benches   # all four suites, about 9 minutes")
    print("mkdir -p runs/a && cp -rp target/criterion runs/a/           # keep it as the earlier run")
    print("rm -rf target/criterion && cargo bench -p connmgr-benches   # the same build again")
    print("python3 benches/report.py --out BENCHMARKS.md --earlier runs/a target")
    print("```\n")
    print("Ratios are from one run, on the same keys in the same order: *baseline time / "
          "connmgr time*, so **above 1 means connmgr is faster** (the scorecard's goal column "
          "names the exceptions). \"2t\" rows give the time per operation as each of two "
          "threads sees it, each thread walking its own half of the keys. Baselines: `DashMap` "
          "(what the reference implementation uses), papaya and scc (the best concurrent maps "
          "in Rust; the status table's targets are set against the fastest of these three) and "
          "`RwLock<HashMap>`, all with the same keyed hasher; a single-threaded `HashMap::get` as the floor and the keyed hash alone "
          "(`hash only`); a `Mutex<HashMap<K, Vec<C>>>` pool and the reference's `DashMap` with "
          "a retain scan per return; a shared `AtomicU64` pair and a `parking_lot::RwLock` for "
          "metrics. On a shared 2-vCPU guest, 2-thread rows move between runs, so a target "
          "counts as met only when both runs meet it.")


def parse_args(args):
    parser = argparse.ArgumentParser(
        prog="report.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", metavar="FILE", help="write the page to FILE (default: standard output)")
    parser.add_argument("--earlier", metavar="DIR",
                        help="a directory holding a criterion/ tree saved from an earlier full run")
    parser.add_argument("targets", nargs="*", metavar="TARGET_DIR", default=["target"])
    a = parser.parse_args(args)
    return a.earlier, a.out, a.targets or ["target"]


def main():
    earlier_dir, out, targets = parse_args(sys.argv[1:])
    previous = Run([earlier_dir], "earlier run") if earlier_dir else None
    current = Run(targets, "this run")
    if out:
        sys.stdout = open(out, "w", encoding="utf-8")
    print_header([r for r in (current, previous) if r])
    rows = current.rows
    card = scorecard(current)
    earlier = scorecard(previous) if previous else None
    notes = []
    if previous and churn_recycles_keys(previous.rows) != churn_recycles_keys(rows):
        old = "The earlier run" if churn_recycles_keys(previous.rows) else "This run"
        notes.append(f"{old} predates `core/reconnect`: its `core/churn` recycled keys "
                     "(what `core/reconnect` measures now), so the two runs' `core/churn` rows "
                     "are not compared.")
    print_scorecard(card, earlier, notes)
    print_spans([r for r in (current, previous) if r])
    families = OrderedDict()
    for (group, param), funcs in rows.items():
        family = "/".join(group.split("/")[:2])
        families.setdefault(family, []).append((group, param, funcs))
    for family, entries in families.items():
        contenders = []
        for _, _, funcs in entries:
            for f in funcs:
                if f not in contenders:
                    contenders.append(f)
        ours = [c for c in contenders if c in OURS]
        others = [c for c in contenders if c not in OURS]
        if family == next(iter(families)):
            print("\n## Tables\n")
            print("Median time per operation; the ratio columns are baseline / ours.")
        print(f"\n### {family}\n")
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
