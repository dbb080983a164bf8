"""`bench compare A.json B.json`: how two saved benchmark reports differ, row by row, with a significance test.

For every (model, backend) measured in both reports: both medians (of the raw samples `results.json` keeps),
the ratio B/A (above 1: B is slower) and a two-sided Mann-Whitney U test on the two sample sets, which assumes
no distribution (latencies are skewed, with a long tail). p < 0.01 is reported as "significant".

Unlike a report's own speed-ups, which come from runners measured interleaved in one run, these ratios compare
two runs: they include whatever changed on the machine in between. A run flagged as loaded, or two reports from
different machines or library versions, is said so in the row's note: such a ratio is not a finding about the
model or backend. numpy and scipy only (no torch).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Union

import numpy as np

from flownas.errors import ToolkitError, one_line

ALPHA = 0.01
Report = Union[str, "os.PathLike[str]", Mapping[str, Any]]


class CompareError(ToolkitError, ValueError):
    """A file that is not a saved benchmark report, or two reports with nothing in common; one line."""


# ------------------------------------------------------------------------------------------------ reading
def load_report(source: Report) -> tuple[str, dict[str, Any]]:
    """(label, report) from a `results.json` path, its report folder, or an already loaded report."""
    if isinstance(source, Mapping):
        return str(source.get("title") or "report"), dict(source)
    path = Path(source)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise CompareError(f"{path}: benchmark report not found (expected a results.json written by flownas bench)")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CompareError(f"{path}: not a JSON file ({one_line(exc)})") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise CompareError(f"{path}: not a benchmark report (no 'results' list; expected flownas bench's "
                           "results.json)")
    return str(path), data


def _rows(label: str, report: Mapping[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """{(model, backend, precision): result} with its raw latency samples checked."""
    rows = {}
    for result in report["results"]:
        samples = (result.get("samples_ms") or {}).get("latency_ms")
        if not isinstance(samples, list) or not samples:
            raise CompareError(f"{label}: result {result.get('name')!r} has no raw latency samples "
                               "(samples_ms.latency_ms)")
        key = (str(result.get("model")), str(result.get("backend")), str(result.get("precision", "fp32")))
        rows[key] = result
    return rows


def _pairs(a: Mapping[tuple, Any], b: Mapping[tuple, Any]) -> list[tuple[tuple, tuple]]:
    """Matching keys: same (model, backend), and the same precision where a side measured several."""
    pairs = []
    for key_a in a:
        same = [key_b for key_b in b if key_b[:2] == key_a[:2]]
        exact = [key_b for key_b in same if key_b == key_a]
        if exact or len(same) == 1 and sum(k[:2] == key_a[:2] for k in a) == 1:
            pairs.append((key_a, (exact or same)[0]))
    return pairs


# ------------------------------------------------------------------------------------------------ compare
def compare_reports(a: Report, b: Report) -> dict[str, Any]:
    """Rows measured in both reports: medians, ratio B/A and a two-sided Mann-Whitney U test per row.

    Returns {"a", "b" (label, title, command, created), "rows", "only_in_a", "only_in_b", "notes"}; each row has
    model, backend, precision_a/b, n_a/n_b, median_a_ms/median_b_ms (of the raw samples), ratio (B/A),
    change_pct, u_statistic, p_value, significant (p < 0.01) and a note. Raises `CompareError` for a file that
    is not a report or reports with no row in common.
    """
    label_a, report_a = load_report(a)
    label_b, report_b = load_report(b)
    rows_a, rows_b = _rows(label_a, report_a), _rows(label_b, report_b)
    pairs = _pairs(rows_a, rows_b)
    if not pairs:
        raise CompareError(f"{label_a} and {label_b} have no (model, backend) in common: A has "
                           f"{_keys(rows_a)}; B has {_keys(rows_b)}")
    caveats = _caveats(report_a, report_b)
    rows = [_compare_row(rows_a[ka], rows_b[kb], report_a, report_b) for ka, kb in pairs]
    matched_a, matched_b = {ka for ka, _ in pairs}, {kb for _, kb in pairs}
    return {"a": _summary(label_a, report_a), "b": _summary(label_b, report_b), "alpha": ALPHA, "rows": rows,
            "only_in_a": [_key_dict(k) for k in rows_a if k not in matched_a],
            "only_in_b": [_key_dict(k) for k in rows_b if k not in matched_b], "notes": caveats}


def _keys(rows: Mapping[tuple, Any]) -> str:
    return ", ".join(f"{m}/{b}" for m, b, _ in rows) or "nothing"


def _key_dict(key: tuple[str, str, str]) -> dict[str, str]:
    return dict(zip(("model", "backend", "precision"), key))


def _summary(label: str, report: Mapping[str, Any]) -> dict[str, Any]:
    prov = report.get("provenance") or {}
    return {"label": label, "title": report.get("title"), "command": report.get("command"),
            "created": prov.get("created") or (report.get("environment") or {}).get("date")}


def _compare_row(ra: Mapping[str, Any], rb: Mapping[str, Any], report_a: Mapping[str, Any],
                 report_b: Mapping[str, Any]) -> dict[str, Any]:
    from scipy.stats import mannwhitneyu  # scipy only where a comparison is made

    xa = np.asarray(ra["samples_ms"]["latency_ms"], dtype=np.float64)
    xb = np.asarray(rb["samples_ms"]["latency_ms"], dtype=np.float64)
    median_a, median_b = float(np.median(xa)), float(np.median(xb))
    test = mannwhitneyu(xa, xb, alternative="two-sided")
    p_value = float(test.pvalue)
    notes = [n for n in (_loaded_note(ra, report_a, "A"), _loaded_note(rb, report_b, "B")) if n]
    if _min_p_value(len(xa), len(xb)) >= ALPHA:
        notes.append(f"too few runs ({len(xa)} and {len(xb)}) for p < {ALPHA:g} even if every B run were slower")
    ratio = median_b / median_a if median_a > 0 else None
    return {"model": ra.get("model"), "backend": ra.get("backend"), "precision_a": ra.get("precision"),
            "precision_b": rb.get("precision"), "n_a": int(xa.size), "n_b": int(xb.size),
            "median_a_ms": median_a, "median_b_ms": median_b, "ratio": ratio,
            "change_pct": (ratio - 1) * 100 if ratio is not None else None,
            "u_statistic": float(test.statistic), "p_value": p_value, "significant": bool(p_value < ALPHA),
            "note": "; ".join(notes)}


def _min_p_value(n_a: int, n_b: int) -> float:
    """The smallest two-sided p the exact U test can give: both extreme orderings out of C(n_a+n_b, n_a)."""
    return min(1.0, 2.0 / math.comb(n_a + n_b, n_a))


def _loaded_note(result: Mapping[str, Any], report: Mapping[str, Any], side: str) -> str | None:
    load = (report.get("load") or {}).get(result.get("run_id")) or {}
    if load.get("loaded"):
        return (f"{side} ran on a loaded machine (1-min load {load.get('load_start')}/{load.get('load_end')} > "
                f"{load.get('cpus')} CPUs): not a finding")
    return None


def _caveats(report_a: Mapping[str, Any], report_b: Mapping[str, Any]) -> list[str]:
    """What differs between the two runs besides the thing compared: machine, libraries."""
    env_a, env_b = report_a.get("environment") or {}, report_b.get("environment") or {}
    notes = ["ratios compare two separate runs: they include anything that changed on the machine in between"]
    for key, what in (("cpu", "CPUs"), ("gpu", "GPUs"), ("host", "hosts")):
        if env_a.get(key) != env_b.get(key):
            notes.append(f"different {what}: A {env_a.get(key)!r}, B {env_b.get(key)!r}")
    va, vb = env_a.get("versions") or {}, env_b.get("versions") or {}
    changed = [f"{lib} {va.get(lib)} -> {vb.get(lib)}" for lib in sorted(set(va) | set(vb)) if va.get(lib) != vb.get(lib)]
    if changed:
        notes.append("library versions differ: " + ", ".join(changed))
    return notes


# ------------------------------------------------------------------------------------------------ text
def format_comparison(result: Mapping[str, Any]) -> str:
    """A Markdown table (readable in a terminal too) with the two reports named above it."""
    a, b = result["a"], result["b"]
    lines = [f"A: {a['label']} ({a.get('title')}, {a.get('created')})",
             f"B: {b['label']} ({b.get('title')}, {b.get('created')})", "",
             "| model | backend | precision | runs A/B | median A (ms) | median B (ms) | B/A | p (Mann-Whitney U) | "
             "difference | note |", "|" + "---|" * 10]
    for row in result["rows"]:
        precision = row["precision_a"] if row["precision_a"] == row["precision_b"] else \
            f"{row['precision_a']} -> {row['precision_b']}"
        verdict = "significant" if row["significant"] else "not significant"
        ratio = "n/a" if row["ratio"] is None else f"{row['ratio']:.3f}x ({row['change_pct']:+.1f}%)"
        lines.append(f"| {row['model']} | {row['backend']} | {precision} | {row['n_a']}/{row['n_b']} | "
                     f"{row['median_a_ms']:.3f} | {row['median_b_ms']:.3f} | {ratio} | {row['p_value']:.2g} | "
                     f"{verdict} | {row['note'] or ''} |")
    for side in ("a", "b"):
        for key in result[f"only_in_{side}"]:
            lines.append(f"only in {side.upper()}: {key['model']} {key['backend']} {key['precision']}")
    lines += ["", f"B/A above 1: B is slower. Significant: two-sided Mann-Whitney U test on the raw samples, "
                  f"p < {result['alpha']:g}."]
    lines += [f"- {note}" for note in result["notes"]]
    return "\n".join(lines)

