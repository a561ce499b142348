"""The real cases' grades, the recipe's five stratified folds, and figures per grade.

Grades are those of the BraTS 2018 training release (its HGG and LGG folders); the BraTS 2021
release publishes none, so its five cases are grouped by what their labels hold: no enhancing
tumor at all (three) or under 1.3 mL of it (two). "Low-grade" in every table means the three LGG
cases and the three without enhancing tumor; the two with little enhancement are reported beside
them. The fold assignment is fixed here, made once by dealing the eight low-grade or non-enhancing
cases round the folds first (at most two per fold) and then the high-grade cases sorted by
institution prefix, so that every fold mixes grades and institutions.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Sequence

import numpy as np

from ..labels import REGIONS

HGG, LGG, NO_ET, LITTLE_ET = "HGG", "LGG", "no-ET", "little-ET"
LOW_GRADE = (LGG, NO_ET)

FOLDS: Sequence[Sequence[str]] = (
    ("Brats18_TCIA10_628_1", "BraTS2021_01484", "Brats18_2013_2_1", "Brats18_CBICA_AQO_1", "Brats18_CBICA_ASE_1",
     "Brats18_TCIA01_231_1", "Brats18_TCIA02_370_1"),
    ("BraTS2021_01477", "BraTS2021_01476", "Brats18_CBICA_ABM_1", "Brats18_CBICA_AQP_1", "Brats18_CBICA_ASG_1",
     "Brats18_TCIA01_378_1", "Brats18_TCIA03_265_1"),
    ("Brats18_TCIA10_637_1", "BraTS2021_01478", "Brats18_CBICA_AOP_1", "Brats18_CBICA_AQQ_1", "Brats18_CBICA_ATB_1",
     "Brats18_TCIA02_135_1"),
    ("BraTS2021_01480", "Brats18_2013_11_1", "Brats18_CBICA_APR_1", "Brats18_CBICA_AQT_1", "Brats18_CBICA_ATD_1",
     "Brats18_TCIA02_151_1"),
    ("Brats18_TCIA13_623_1", "Brats18_2013_20_1", "Brats18_CBICA_APZ_1", "Brats18_CBICA_ARZ_1", "Brats18_TCIA01_201_1",
     "Brats18_TCIA02_171_1"),
)

_SPECIAL = {"Brats18_TCIA10_628_1": LGG, "Brats18_TCIA10_637_1": LGG, "Brats18_TCIA13_623_1": LGG,
            "BraTS2021_01477": NO_ET, "BraTS2021_01480": NO_ET, "BraTS2021_01484": NO_ET,
            "BraTS2021_01476": LITTLE_ET, "BraTS2021_01478": LITTLE_ET}
GRADES: Dict[str, str] = {c: _SPECIAL.get(c, HGG) for fold in FOLDS for c in fold}
FOLD_OF: Dict[str, int] = {c: k for k, fold in enumerate(FOLDS) for c in fold}  # the fold that holds a case out


def institution(case_id: str) -> str:
    """The institution prefix of a BraTS case id (2013, CBICA, TCIA01, ...; BraTS2021 for that release)."""
    return "BraTS2021" if case_id.startswith("BraTS2021") else case_id.split("_")[1]


def fold_cases(fold: int) -> List[str]:
    """The held-out cases of ``fold`` (0-4)."""
    return list(FOLDS[fold])


def _means(rows: Sequence[Mapping]) -> Dict[str, float]:
    return {f"{k}_{r}": float(np.mean([row[r][k] for row in rows])) for k in ("dice", "hd95", "volume_error_ml")
            for r in REGIONS}


def grade_groups(case_ids: Sequence[str]) -> Dict[str, List[str]]:
    """The groups every table reports, in order: all cases, the high-grade ones, the low-grade ones
    (LGG and no enhancing tumor) and those with little enhancement (a group may be empty)."""
    return {"all": list(case_ids), "HGG": [c for c in case_ids if GRADES.get(c) == HGG],
            "low-grade": [c for c in case_ids if GRADES.get(c) in LOW_GRADE],
            "little-ET": [c for c in case_ids if GRADES.get(c) == LITTLE_ET]}


def grade_summary(per_case: Mapping[str, Mapping]) -> Dict:
    """Mean Dice, HD95 and volume error per region over all cases, the high-grade ones, the low-grade
    ones (LGG and no enhancing tumor) and those with little enhancement, with their case counts; and,
    over the cases whose reference has no enhancing tumor, how many got none predicted.

    Args:
        per_case: case id -> region -> {dice, hd95, volume_error_ml (predicted minus reference),
            volume_ref_ml}, as ``real_validation.case_table`` makes them.
    """
    groups = grade_groups(list(per_case))
    out: Dict = {g: {"cases": len(ids), **(_means([per_case[c] for c in ids]) if ids else {})} for g, ids in groups.items()}
    no_et = [c for c in per_case if per_case[c]["ET"]["volume_ref_ml"] == 0.0]
    out["without_et"] = {"cases": len(no_et),
                         "none_predicted": sum(1 for c in no_et if per_case[c]["ET"]["volume_error_ml"] == 0.0)}
    return out
