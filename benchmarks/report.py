"""Summaries and reports: medians, min-max, ratios, geomeans, targets; JSON and Markdown.

Owns turning raw samples into statistics and writing ``RESULTS.md``. Every ratio is a
slowdown factor (above 1 = slower than the reference column of the same run): time / time,
or IOPS(reference) / IOPS for throughput metrics. It must not run anything.
"""

from __future__ import annotations

import json
import math
import statistics
from typing import Any

from .workloads import HIGHER_IS_BETTER, LATENCY_ONLY, METRICS, UNITS

REFS = ("kernel", "fuse-overlayfs")
TARGET_COLUMN = "cowfs-fuse"


def summarize(samples: list[dict[str, Any]], impls: list[str]) -> dict[str, Any]:
    """Per metric and column: samples, median, min, max, checks; ratios; geomeans."""
    stats: dict[str, dict[str, Any]] = {}
    for metric in METRICS:
        row: dict[str, Any] = {}
        for impl in impls:
            recs = [s for s in samples if s["impl"] == impl and metric in s["metrics"]]
            failed = [s for s in samples if s["impl"] == impl and not s["ok"]
                      and (metric in s["metrics"] or not s["metrics"])
                      and metric in _metrics_of(s["workload"])]
            vals = [s["metrics"][metric] for s in recs]
            if not vals and not failed:
                continue
            row[impl] = {
                "samples": vals,
                "median": statistics.median(vals) if vals else None,
                "min": min(vals) if vals else None,
                "max": max(vals) if vals else None,
                "checks_ok": not failed and bool(vals),
                "problems": sorted({p for s in failed for p in s["problems"]})[:5],
            }
        if row:
            stats[metric] = row
    ratios: dict[str, dict[str, dict[str, float]]] = {ref: {} for ref in REFS}
    for ref in REFS:
        for metric, row in stats.items():
            base = row.get(ref, {}).get("median")
            for impl, cell in row.items():
                if base and cell["median"]:
                    r = (base / cell["median"] if metric in HIGHER_IS_BETTER
                         else cell["median"] / base)
                    ratios[ref].setdefault(impl, {})[metric] = r
    geomeans = {ref: {impl: _geomean([v for k, v in m.items() if k not in LATENCY_ONLY])
                      for impl, m in per.items()} for ref, per in ratios.items()}
    geomeans_all = {ref: {impl: _geomean(list(m.values())) for impl, m in per.items()}
                    for ref, per in ratios.items()}
    paired, round_geo = _paired(samples, impls)
    cpu: dict[str, dict[str, float]] = {}
    for metric in METRICS:
        for impl in impls:
            xs = [s["daemon_cpu"][metric] for s in samples
                  if s["impl"] == impl and s["ok"] and metric in s.get("daemon_cpu", {})]
            if xs:
                cpu.setdefault(metric, {})[impl] = statistics.median(xs)
    return {"stats": stats, "ratios": ratios, "geomean": geomeans, "geomean_all": geomeans_all,
            "paired": paired, "round_geomean": round_geo, "daemon_cpu": cpu}


def _paired(samples: list[dict[str, Any]], impls: list[str]) -> tuple[Any, Any]:
    """Per-round ratios (a column's sample over the reference's sample of the same round).

    Returns ``paired[ref][impl][metric] = [ratio per round]`` and
    ``round_geomean[ref][impl] = [workload geomean per round]``: the spread of these is the
    run's noise as it affects the ratios.
    """
    by: dict[tuple[int, str, str], float] = {}
    for s in samples:
        if s["ok"]:
            for metric, v in s["metrics"].items():
                by[(s["round"], s["impl"], metric)] = v
    rounds = sorted({s["round"] for s in samples})
    paired: dict[str, dict[str, dict[str, list[float]]]] = {}
    round_geo: dict[str, dict[str, list[float]]] = {}
    for ref in REFS:
        for impl in impls:
            per_round: dict[int, list[float]] = {}
            for metric in METRICS:
                for rnd in rounds:
                    a, b = by.get((rnd, impl, metric)), by.get((rnd, ref, metric))
                    if not a or not b:
                        continue
                    r = b / a if metric in HIGHER_IS_BETTER else a / b
                    paired.setdefault(ref, {}).setdefault(impl, {}).setdefault(metric, []).append(r)
                    if metric not in LATENCY_ONLY:
                        per_round.setdefault(rnd, []).append(r)
            if per_round:
                round_geo.setdefault(ref, {})[impl] = [_geomean(v) for v in per_round.values()]
    return paired, round_geo


def _metrics_of(workload: str) -> tuple[str, ...]:
    from .workloads import BY_NAME

    return BY_NAME[workload].metrics


def _geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 8's targets for the cowfs FUSE column (against fuse-overlayfs of the same run)."""
    vs = summary["ratios"]["fuse-overlayfs"].get(TARGET_COLUMN)
    mount = summary["stats"].get("mount", {}).get(TARGET_COLUMN, {}).get("median")
    if not vs:
        return []
    geo = summary["geomean"]["fuse-overlayfs"][TARGET_COLUMN]
    per_round = summary.get("round_geomean", {}).get("fuse-overlayfs", {}).get(TARGET_COLUMN, [])
    spread = (f" (per round {min(per_round):.2f}-{max(per_round):.2f}x)"
              if len(per_round) > 1 else "")
    work = {m: v for m, v in vs.items() if m not in LATENCY_ONLY}
    out = [{"target": "geomean of workloads ≤ 1.0x fuse-overlayfs",
            "value": f"{geo:.2f}x{spread}", "met": geo <= 1.0}]
    if work:
        worst = max(work, key=lambda m: work[m])
        over = sorted((m for m in work if work[m] > 3.0), key=lambda m: -work[m])
        out.append({"target": "no workload > 3x fuse-overlayfs",
                    "value": f"worst {worst} {work[worst]:.2f}x"
                    + (f"; over 3x: {', '.join(over)}" if over else ""),
                    "met": work[worst] <= 3.0})
    for m in ("seqread_warm", "smallread_warm", "seqread_hot", "smallread_hot"):
        if m in vs:
            out.append({"target": f"{m} ≥ 5x fuse-overlayfs (as fast)",
                        "value": f"{1 / vs[m]:.2f}x as fast", "met": vs[m] <= 0.2})
    if mount is not None:
        out.append({"target": "mount < 300 ms", "value": f"{mount * 1000:.0f} ms",
                    "met": mount < 0.3})
    return out


def _fmt(metric: str, v: float | None) -> str:
    if v is None:
        return "-"
    if metric in UNITS:
        return f"{v:,.0f}"
    return f"{v * 1000:.1f}" if v < 10 else f"{v * 1000:,.0f}"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def markdown(doc: dict[str, Any]) -> str:
    meta, summ = doc["meta"], doc["summary"]
    impls = [i for i in doc["columns"] if doc["columns"][i]["available"]]
    lines = ["# cowfs benchmark results", "",
             "Generated by `make bench` (`python -m benchmarks`); do not edit by hand. "
             "Method: `docs/performance.md`.", ""]
    m = meta["machine"]
    lines += [
        f"- date: {meta['started']} - {meta['finished']} (UTC), {meta['elapsed_s']:.0f} s",
        f"- command: `{meta['command']}`",
        f"- machine: {m['cpu']}, {m['cpus']} CPUs, {m['memory_bytes'] / 2**30:.1f} GiB, "
        f"{m['os']}, kernel {m['kernel']}",
        f"- load average (1/5/15 min) before: {_load(meta['load_before'])}, "
        f"after: {_load(meta['load_after'])}; 1-min load at the samples: "
        f"{_spread([s.get('load1', 0.0) for s in doc['samples']])}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        f"- backing: {meta['backing']}; rounds: {meta['rounds']} (interleaved, rotating order);"
        f" fio runtime {meta['fio_runtime']} s",
        "- fixture: " + ", ".join(f"{k}={v}" for k, v in meta["fixture"].items()),
        "",
    ]
    lines += ["## Columns", ""]
    rows = []
    for name, col in doc["columns"].items():
        ver = doc["verify"].get(name, {})
        state = ("verified: " + ("ok" if ver.get("ok") else "FAILED")
                 + f" ({ver.get('entries', 0)} entries)") if ver else ""
        rows.append([f"`{name}`", col["version"] or "",
                     state if col["available"] else f"unavailable: {col['reason']}"])
    lines += [*_table(["column", "version", "merged view check / status"], rows), ""]
    lines += ["## Medians (min-max)", "",
              "Times in ms (lower is better); fio in IOPS, read + write (higher is better). "
              "✗ marks a failed result check.", ""]
    rows = []
    for metric, row in summ["stats"].items():
        cells = []
        for impl in impls:
            c = row.get(impl)
            if c is None:
                cells.append("-")
                continue
            mark = "" if c["checks_ok"] else " ✗"
            cells.append(f"{_fmt(metric, c['median'])} ({_fmt(metric, c['min'])}-"
                         f"{_fmt(metric, c['max'])}){mark}")
        rows.append([metric, *cells])
    lines += [*_table(["metric", *impls], rows), ""]
    for ref in ("fuse-overlayfs", "kernel"):
        per = summ["ratios"][ref]
        if not per:
            continue
        pr = summ.get("paired", {}).get(ref, {})
        lines += [f"## Slowdown vs {ref} (ratio of medians; above 1 = slower)", "",
                  "In parentheses: min-max of the per-round ratios (same round, paired).", ""]
        rows = [[metric, *[_ratio(per.get(i, {}).get(metric), pr.get(i, {}).get(metric))
                           for i in impls]]
                for metric in summ["stats"]]
        rows.append(["**geomean (workloads)**",
                     *[f"**{_ratio(summ['geomean'][ref].get(i))}**" for i in impls]])
        rows.append(["geomean incl. mount/unmount",
                     *[_ratio(summ["geomean_all"][ref].get(i)) for i in impls]])
        lines += [*_table(["metric", *impls], rows), ""]
    lines += _cpu_table(summ)
    tg = targets(summ)
    if tg:
        lines += ["## Issue 8 targets for `cowfs-fuse`", ""]
        lines += _table(["target", "measured", "met"],
                        [[t["target"], t["value"], "yes" if t["met"] else "**no**"] for t in tg])
        lines += [""]
    problems = [(metric, impl, c["problems"]) for metric, row in summ["stats"].items()
                for impl, c in row.items() if c["problems"]]
    if problems:
        lines += ["## Failed checks", ""]
        lines += [f"- {metric} / {impl}: {'; '.join(p)}" for metric, impl, p in problems] + [""]
    for name, sec in doc.get("sections", {}).items():
        lines += [f"## Section: {name}", "", *_section(sec), ""]
    return "\n".join(lines).rstrip() + "\n"


def _cpu_table(summ: dict[str, Any]) -> list[str]:
    """FUSE daemons' CPU (user + system) during the timed part, and as a share of wall time."""
    cpu = summ.get("daemon_cpu", {})
    cols = sorted({i for row in cpu.values() for i in row})
    if not cpu or not cols:
        return []
    rows = []
    for metric, row in cpu.items():
        cells = []
        for impl in cols:
            c, wall = row.get(impl), summ["stats"].get(metric, {}).get(impl, {}).get("median")
            if c is None:
                cells.append("-")
            elif metric in HIGHER_IS_BETTER or not wall:
                cells.append(f"{c * 1000:,.0f}")
            else:
                cells.append(f"{c * 1000:,.0f} ({c / wall:.0%})")
        rows.append([metric, *cells])
    return ["## FUSE daemon CPU during the timed part", "",
            "user + system ms of the daemon process (all threads), median over rounds; in "
            "parentheses as a share of the wall time (10 ms clock-tick resolution). fio: "
            "over the whole fio run, layout included.", "",
            *_table(["metric", *cols], rows), ""]


def _spread(xs: list[float]) -> str:
    if not xs:
        return "-"
    return f"median {statistics.median(xs):.2f}, max {max(xs):.2f}"


def _load(la: list[float]) -> str:
    return "/".join(f"{x:.2f}" for x in la)


def _ratio(x: float | None, rounds: list[float] | None = None) -> str:
    if x is None or math.isnan(x):
        return "-"
    if rounds and len(rounds) > 1 and max(rounds) != min(rounds):
        return f"{x:.2f}x ({min(rounds):.2f}-{max(rounds):.2f})"
    return f"{x:.2f}x"


def _section(sec: dict[str, Any]) -> list[str]:
    if "unavailable" in sec:
        return [f"Not run: {sec['unavailable']}"]
    res = sec.get("result")
    if isinstance(res, str):
        return [res]
    rows = res.get("rows") if isinstance(res, dict) else res if isinstance(res, list) else None
    out: list[str] = []
    if isinstance(res, dict) and isinstance(res.get("markdown"), str):
        return [res["markdown"]]
    if rows and all(isinstance(r, dict) for r in rows):
        head = list(dict.fromkeys(k for r in rows for k in r))
        out += _table(head, [[_cell(r.get(k)) for k in head] for r in rows])
        rest = {k: v for k, v in res.items() if k != "rows"} if isinstance(res, dict) else {}
        if rest:
            out += ["", "```json", json.dumps(rest, indent=1, default=str), "```"]
        return out
    return ["```json", json.dumps(res, indent=1, default=str), "```"]


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)
