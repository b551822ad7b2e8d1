#!/usr/bin/env python3
"""Tables of a benchmarks/ddp-matrix.sh directory, as docs/benchmarks.md shows them.

    python3 benchmarks/ddp-matrix-table.py DIR [CELL-PREFIX]

Per cell: each run's time per step (steady state, from results.jsonl), its ratio to DDP
fp32 of the same cell, the bytes through the first host's link (the coordinator's, for
svite) and the mean of the others, and for the accuracy cells the final top-1, the time to
DDP fp32's final top-1 less 0.3 pt and the whole run's training time. Times to accuracy are
read from each run's metrics.jsonl: an evaluation's time is its own `elapsed_seconds`
(DDP's records, and svite's from d27e1c3) or that of the last train record at or before
its step (svite's before).
"""
import json
import os
import sys


def evals_with_time(path):
    recs = [json.loads(l) for l in open(path) if l.strip()]
    train = [r for r in recs if r.get("kind") == "train"]
    out = []
    for e in (r for r in recs if r.get("kind") == "eval"):
        t = e.get("elapsed_seconds")
        if t is None:
            before = [r for r in train if r["step"] <= e["step"]]
            t = before[-1]["elapsed_seconds"] if before else None
        out.append((e["step"], e["eval_accuracy"], t))
    end = [r for r in recs if r.get("kind") == "end"]
    total = (end[-1] if end else train[-1])["elapsed_seconds"]
    return out, total


def cells_of(root):
    """(cell name, its rows) in the order the cells ran (DIR/done). Rows that name their cell
    (netns-cluster.sh writes the --out directory's name) go to it, a cell run again after a
    failure keeping each run's latest row; older rows are grouped up to the next change of
    hosts, rate or kind, or a run that repeats within a group, and matched to the cells by
    their runs."""
    rows = [json.loads(l) for l in open(os.path.join(root, "results.jsonl")) if l.strip()]
    names = [l.strip() for l in open(os.path.join(root, "done")) if l.strip()]
    named = {}
    groups = []
    for r in rows:
        if "cell" in r:
            named.setdefault(r["cell"], []).append(r)
            continue
        key = (r["hosts"], r["rate"], r["steps"] > 100)
        if not groups or groups[-1][0] != key or any(g["run"] == r["run"] for g in groups[-1][1]):
            groups.append((key, []))
        groups[-1][1].append(r)
    # An older row's cell: the next group whose runs are the ones the cell's directory kept
    # (RUN.counters), so a failed cell's rows are passed over.
    out, k = [], 0
    for n in names:
        if n in named:
            out.append((n, named[n]))
            continue
        d = os.path.join(root, n)
        kept = {f[:-len(".counters")] for f in os.listdir(d) if f.endswith(".counters")} if os.path.isdir(d) else set()
        j = next((j for j in range(k, len(groups)) if {r["run"] for r in groups[j][1]} == kept), None)
        if j is None:
            continue
        out.append((n, groups[j][1]))
        k = j + 1
    return out


def main(root, only=None):
    for name, cell_rows in cells_of(root):
        if only and not name.startswith(only):
            continue
        kind = "acc" if "acc" in name else "steps"
        latest = {}
        for r in cell_rows:
            latest[r["run"]] = r
        ddp = latest.get("ddp-none")
        print(f"\n{name} (svite {', '.join(sorted({r['commit'] for r in latest.values()}))})\n")
        if kind == "steps":
            print("| run | ms/step | vs DDP fp32 | MiB/step, first host's link | mean of the others | wire share |")
            print("|---|---|---|---|---|---|")
            for r in latest.values():
                ratio = f"{ddp['ms_per_step'] / r['ms_per_step']:.2f}x" if ddp else ""
                share = f"{100 * r['wire_share']:.0f}%" if "wire_share" in r else ""
                print(f"| {r['run']} | {r['ms_per_step']:.0f} | {ratio} | {r['first_host_mib_per_step']:.2f} | "
                      f"{r['other_hosts_mib_per_step']:.2f} | {share} |")
            continue
        target = ddp["final_top1"] - 0.003 if ddp else None
        base = None
        print("| run | ms/step | final top-1 | time to DDP fp32's top-1 − 0.3 pt | vs DDP fp32 | whole run | MiB/step, first host | others |")
        print("|---|---|---|---|---|---|---|---|")
        for r in latest.values():
            run_dir = os.path.join(root, name, r["run"])
            evals, total = evals_with_time(os.path.join(run_dir, "metrics.jsonl"))
            hit = next((t for _, a, t in evals if target is not None and a >= target - 1e-9), None)
            if r["run"] == "ddp-none":
                base = hit
            ratio = f"{hit / base:.2f}x" if hit is not None and base else ""
            print(f"| {r['run']} | {r['ms_per_step']:.0f} | {100 * r['final_top1']:.2f}% | "
                  f"{'not reached' if hit is None else f'{hit:.0f} s'} | {ratio} | {total:.0f} s | "
                  f"{r['first_host_mib_per_step']:.2f} | {r['other_hosts_mib_per_step']:.2f} |")
            print(f"|  | epochs: " + ", ".join(f"{100 * a:.2f}% at {t:.0f} s" for _, a, t in evals) + " | | | | | | |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".", sys.argv[2] if len(sys.argv) > 2 else None)
