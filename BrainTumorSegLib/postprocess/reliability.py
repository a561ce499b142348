"""When a segmentation looks like the tumors the models fail on: little or no enhancing tumor.

Low-grade and non-enhancing gliomas are where the real-data models are weakest (their large
non-enhancing cores labelled edema or missed, large tumors under-segmented: docs/models.md). A
prediction whose enhancing tumor is under 2 % of its whole tumor has that pattern: out of fold over
the 32 shared cases with v6 and with the default v9, all eight low-grade, non-enhancing and
little-enhancing cases had it, and one high-grade case whose enhancing rim the model missed; with v6
the next case had 4 %.
The warning quotes the model's own held-out figures for the cases with and without the pattern.
A case without T1 or T2 gets the model's held-out figures with that sequence left out, where its
manifest has them (:func:`without_warning`).
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional

import numpy as np

from ..labels import REGIONS
from ..read.cases import ALL_FOUR, without_condition

ET_SHARE = 0.02      # enhancing tumor under this share of the whole tumor: the pattern
MIN_WT_ML = 1.0      # below this there is no tumor to speak of


def non_enhancing(volumes_ml: Mapping[str, float]) -> bool:
    """Whether predicted volumes (mL, with ``WT`` and ``ET``) show little or no enhancing tumor."""
    wt = volumes_ml.get("WT", 0.0)
    return wt >= MIN_WT_ML and volumes_ml.get("ET", 0.0) < ET_SHARE * wt


def _predicted(row: Mapping[str, Mapping[str, float]]) -> Dict[str, float]:
    return {r: row[r]["volume_ref_ml"] + row[r]["volume_error_ml"] for r in ("WT", "ET")}


def pattern_summary(per_case: Mapping[str, Mapping[str, Mapping[str, float]]]) -> Dict[str, Dict[str, float]]:
    """Held-out cases split by whether the prediction had the pattern: their count, mean Dice per
    region and mean whole-tumor volume error (mL, predicted minus reference).

    Args:
        per_case: case id -> region -> {dice, volume_error_ml, volume_ref_ml, ...}, as the
            validation tables of the recipes and ensembles record them.
    """
    groups: Dict[str, List[Mapping]] = {"pattern": [], "others": []}
    for row in per_case.values():
        groups["pattern" if non_enhancing(_predicted(row)) else "others"].append(row)

    def summary(rows: List[Mapping]) -> Dict[str, float]:
        if not rows:
            return {"cases": 0}
        out = {f"dice_{r}": float(np.mean([x[r]["dice"] for x in rows])) for r in REGIONS}
        return {"cases": len(rows), **out, "volume_error_ml_WT": float(np.mean([x["WT"]["volume_error_ml"] for x in rows]))}

    return {g: summary(rows) for g, rows in groups.items()}


def warning(volumes_ml: Mapping[str, float], model: str,
            held_out: Optional[Mapping[str, Mapping[str, Mapping[str, float]]]]) -> Optional[str]:
    """The warning for a segmentation with the pattern (None without it), with ``model``'s figures
    on its held-out cases (``held_out``, a table as :func:`pattern_summary` reads) when it has them."""
    if not non_enhancing(volumes_ml):
        return None
    head = (f"little or no enhancing tumor (ET {volumes_ml.get('ET', 0.0):.1f} mL of a {volumes_ml['WT']:.1f} mL "
            "whole tumor): the pattern of low-grade and non-enhancing gliomas, on which the models are least "
            "reliable")
    tail = "; review the tumor core (often labelled edema) and the tumor's extent"
    try:
        s = pattern_summary(held_out) if held_out else None
    except (AttributeError, KeyError, TypeError):  # a manifest whose table is not of this form
        s = None
    if not s or not s["pattern"]["cases"]:
        return head + tail
    p, o = s["pattern"], s["others"]
    size = p["volume_error_ml_WT"]
    figures = (f"{model} on held-out cases, {p['cases']} like this: Dice WT {p['dice_WT']:.2f}, TC {p['dice_TC']:.2f}"
               + (f", whole tumor {-size:.0f} mL too small on average" if size <= -1.0 else ""))
    if o["cases"]:
        figures += f"; {o['cases']} others: WT {o['dice_WT']:.2f}, TC {o['dice_TC']:.2f}"
    return head + f" ({figures})" + tail


def without_warning(role: str, model: str, without: Mapping[str, Mapping]) -> str:
    """What ``model`` did on its held-out cases with ``role`` left out against all four sequences
    (``without``: :func:`ensembles.held_out_without`'s figures, holding ``without_condition(role)``)."""
    def dice(m: Mapping) -> str:
        return ", ".join(f"{r} {m[f'dice_{r}']:.2f}" for r in REGIONS)

    return (f"{model} on {without['cases']} held-out cases with {role} left out: Dice {dice(without[without_condition(role)])} "
            f"(all four sequences: {dice(without[ALL_FOUR])})")
