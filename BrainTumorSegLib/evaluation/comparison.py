"""Two designs' held-out figures compared case by case (paired), per region and per grade; or one
design's figures with their intervals.

On 32 cases a design decision can turn on one case (a 1 mL enhancing spot turns an ET Dice of 1
into 0, 0.031 of the mean). So besides the difference of the means this gives what a reader needs
to judge it: a 95 % interval of the mean difference by resampling cases (the percentile bootstrap,
Efron & Tibshirani, An Introduction to the Bootstrap, 1993, ch. 13), how many cases got better and
how many worse, and the case that moves the difference most with the difference without it.
"""
from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from ..labels import REGIONS
from .cross_validation import grade_groups

PerCase = Mapping[str, Mapping[str, Any]]
COLUMNS = (*REGIONS, "mean")
TIE = 0.005  # a case whose Dice moves less than this counts as neither better nor worse
MIN_CASES = 5  # fewer cases give no interval: a bootstrap of two or three cases says nothing


def _dice(row: Mapping[str, Any], column: str) -> float:
    if column == "mean":
        return float(np.mean([row[r]["dice"] for r in REGIONS]))
    return float(row[column]["dice"])


def _interval(values: np.ndarray, resamples: int, rng: np.random.Generator) -> Optional[List[float]]:
    """The 95 % percentile-bootstrap interval of the mean; None under :data:`MIN_CASES` cases."""
    if len(values) < MIN_CASES:
        return None
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def _span(interval: Optional[List[float]], signed: bool) -> str:
    if interval is None:
        return "[no interval: too few cases]"
    f = "{:+.4f}" if signed else "{:.3f}"
    return f"[{f.format(interval[0])}, {f.format(interval[1])}]"


def _groups(case_ids: Sequence[str]) -> Dict[str, List[str]]:
    """:func:`cross_validation.grade_groups` of the sorted cases, the empty groups left out."""
    return {g: ids for g, ids in grade_groups(sorted(case_ids)).items() if ids}


def mean_intervals(a: PerCase, resamples: int = 10000, seed: int = 0) -> Dict[str, Any]:
    """One table's mean Dice per region and grade, each with its 95 % interval by resampling the
    cases: how far the figures of so few cases can be trusted.

    Returns:
        ``cases``, and ``groups``: group -> column (WT, TC, ET, mean) -> n, mean, interval.
    """
    if not a:
        raise InputError(None, "the table holds no case")
    rng = np.random.default_rng(seed)
    groups: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for group, ids in _groups(list(a)).items():
        groups[group] = {}
        for column in COLUMNS:
            d = np.array([_dice(a[c], column) for c in ids])
            groups[group][column] = {"n": len(ids), "mean": float(d.mean()), "interval": _interval(d, resamples, rng)}
    return {"cases": sorted(a), "resamples": resamples, "seed": seed, "groups": groups}


def compare(a: PerCase, b: PerCase, resamples: int = 10000, seed: int = 0) -> Dict[str, Any]:
    """B against A on the cases both tables hold.

    Args:
        a, b: case id -> region -> {"dice": ...} (the manifests' per-case tables).
        resamples: bootstrap resamples of the cases for the 95 % interval.
        seed: the resampling's seed (the figures are reproducible).

    Returns:
        ``cases`` (compared), ``only_in_a`` / ``only_in_b`` (left out), and ``groups``: group (all,
        HGG, low-grade, little-ET; groups without a case are left out) -> column (WT, TC, ET, mean
        over the regions) -> n, mean_a, mean_b, difference (B - A), interval (95 %), better, worse,
        and ``decided_by``: the case whose removal moves the difference most, and the difference
        without it.
    """
    common = sorted(set(a) & set(b))
    if not common:
        raise InputError(None, "the two tables have no case in common")
    rng = np.random.default_rng(seed)
    groups: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for group, ids in _groups(common).items():
        groups[group] = {}
        for column in COLUMNS:
            da = np.array([_dice(a[c], column) for c in ids])
            db = np.array([_dice(b[c], column) for c in ids])
            diff = db - da
            entry: Dict[str, Any] = {"n": len(ids), "mean_a": float(da.mean()), "mean_b": float(db.mean()),
                                     "difference": float(diff.mean()), "interval": _interval(diff, resamples, rng),
                                     "better": int((diff > TIE).sum()), "worse": int((diff < -TIE).sum())}
            if len(ids) > 1:
                without = (diff.sum() - diff) / (len(ids) - 1)
                k = int(np.argmax(np.abs(without - diff.mean())))
                entry["decided_by"] = {"case": ids[k], "its_difference": float(diff[k]),
                                       "difference_without_it": float(without[k])}
            groups[group][column] = entry
    return {"cases": common, "only_in_a": sorted(set(a) - set(b)), "only_in_b": sorted(set(b) - set(a)),
            "resamples": resamples, "seed": seed, "tie": TIE, "groups": groups}


def format_comparison(result: Mapping[str, Any], name_a: str, name_b: str) -> str:
    """A plain-text table of :func:`compare`'s result."""
    lines = [f"{name_b} against {name_a}: Dice, {len(result['cases'])} cases both hold; difference B - A with its "
             f"95 % interval ({result['resamples']} resamples of the cases), cases better / worse by over "
             f"{result['tie']}"]
    lines += [f"  {name}'s figures are those of {by}" for name, by in zip((name_a, name_b), result.get("held_out_by", ())) if by]
    for side, name in (("only_in_a", name_a), ("only_in_b", name_b)):
        if result[side]:
            lines.append(f"  left out, only in {name}: {', '.join(result[side])}")
    for group, columns in result["groups"].items():
        lines.append(f"{group} ({columns['mean']['n']} cases)")
        for column, e in columns.items():
            line = (f"  {column:<4} {e['mean_a']:.3f} -> {e['mean_b']:.3f}  {e['difference']:+.4f} "
                    f"{_span(e['interval'], True)}  better {e['better']}, worse {e['worse']}")
            d = e.get("decided_by")
            if d and abs(d["its_difference"]) > result["tie"]:
                line += f"; without {d['case']} ({d['its_difference']:+.3f}): {d['difference_without_it']:+.4f}"
            lines.append(line)
    return "\n".join(lines)


def format_intervals(result: Mapping[str, Any], name: str) -> str:
    """A plain-text table of :func:`mean_intervals`' result."""
    by = (result.get("held_out_by") or [""])[0]
    lines = [f"{name}: mean Dice of {len(result['cases'])} held-out cases{' (by ' + by + ')' if by else ''} with "
             f"its 95 % interval ({result['resamples']} resamples of the cases)"]
    for group, columns in result["groups"].items():
        lines.append(f"{group} ({columns['mean']['n']} cases)")
        lines += [f"  {column:<4} {e['mean']:.3f} {_span(e['interval'], False)}" for column, e in columns.items()]
    return "\n".join(lines)


def _is_dice(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= 1


def held_out_cases(source: str) -> Tuple[Dict[str, Any], str]:
    """The per-case held-out table of a model (name or folder: its manifest's, as ``models`` shows
    it) or of a JSON file (a manifest, or a report with ``per_case``), and whose figures they are
    when not the model's own ('' when they are)."""
    from ..models import bundles, ensembles

    if os.path.isfile(source):
        document = bundles.read_json(source)
    else:
        document = bundles.read_document(bundles.resolve(source))
    table: Optional[Dict[str, Any]] = None
    if isinstance(document, dict):
        table = document.get("per_case") if isinstance(document.get("per_case"), dict) else None
        table = table or ensembles.held_out_table(document)
    if not table:
        raise InputError(source, "holds no per-case figures on held-out cases")
    for case_id, row in table.items():
        if not (isinstance(row, dict) and all(isinstance(row.get(r), dict) and _is_dice(row[r].get("dice"))
                                               for r in REGIONS)):
            raise InputError(source, f"case {case_id} lacks a Dice from 0 to 1 for each of {', '.join(REGIONS)}")
    return table, ensembles.held_out_by(document)


def compare_sources(sources: Sequence[str], resamples: int = 10000, seed: int = 0) -> Dict[str, Any]:
    """Two models or JSON files (A, B): :func:`compare`; one: :func:`mean_intervals`; every table
    checked before any figure."""
    if len(sources) not in (1, 2):
        raise InputError(None, f"compare takes one or two models or tables, not {len(sources)}")
    if not 100 <= resamples <= 100000:
        raise InputError(None, f"--resamples must be from 100 to 100000, not {resamples}")
    if seed < 0:
        raise InputError(None, f"--seed must be 0 or more, not {seed}")
    found = [held_out_cases(s) for s in sources]
    tables = [table for table, _ in found]
    if len(tables) == 2 and not set(tables[0]) & set(tables[1]):
        raise InputError(sources[1], f"has no case in common with {sources[0]}")
    result = mean_intervals(tables[0], resamples, seed) if len(tables) == 1 else \
        compare(tables[0], tables[1], resamples, seed)
    return {**result, "held_out_by": [by for _, by in found]}
