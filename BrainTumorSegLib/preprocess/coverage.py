"""Sequences a case lacks, and how much of the brain each sequence it has covers.

A case may lack its T1 or T2 (``cases.OPTIONAL_SEQUENCES``): their channels are then left empty,
as in training's sequence dropout (:func:`channels`); the T1ce and the FLAIR are needed
(:func:`absent_sequences`).

A sequence whose field of view misses part of the brain (a T1 acquired as a slab, a FLAIR cut off
at the vertex) leaves zeros where the others see brain; left unnoticed, the network reads that edge
as anatomy and can put "tumor" there. The brain here is every voxel some sequence sees, so each
sequence's coverage is the share of those voxels where it is nonzero.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from ..read.cases import OPTIONAL_SEQUENCES

WARN_BELOW = 0.90  # on 31 of the 32 shared BraTS cases every sequence covers 98.8-100 %; 2013_20's FLAIR 67 %


def coverage_of_brain(arrays: Mapping[str, np.ndarray], brain: np.ndarray, names: Mapping[str, str],
                      warnings: List[str]) -> Dict[str, float]:
    """Each sequence's share (0-1) of the ``brain`` voxels where it is nonzero; a warning naming
    the file for each under :data:`WARN_BELOW`."""
    total = int(brain.sum())
    out: Dict[str, float] = {}
    for role, arr in arrays.items():
        share = float(np.count_nonzero((arr != 0) & brain)) / total if total else 0.0
        out[role] = round(share, 4)
        if share < WARN_BELOW:
            warnings.append(f"{names.get(role, role)}: covers only {share:.0%} of the brain the other sequences "
                            f"show (a partial field of view?); labels near its edge are less reliable")
    return out


def absent_sequences(images: Mapping[str, Optional[object]], roles: Sequence[str], reference: str) -> List[str]:
    """The roles not given; an error naming the first that is needed (the reference, or a sequence
    that is not optional)."""
    absent = [r for r in roles if images.get(r) is None]
    needed = [r for r in absent if r not in OPTIONAL_SEQUENCES or r == reference]
    if needed:
        required = ", ".join(r for r in roles if r not in OPTIONAL_SEQUENCES)
        raise InputError(needed[0], f"no {needed[0]} sequence given (needed: {required}; "
                                    f"{' and '.join(OPTIONAL_SEQUENCES)} may be left out)")
    if reference not in roles:
        raise InputError(reference, f"reference sequence {reference} is not among {roles}")
    return absent


def channels(given: Mapping[str, np.ndarray], roles: Sequence[str], reference: str, names: Mapping[str, str],
             warnings: List[str]) -> Tuple[List[np.ndarray], np.ndarray, Dict[str, float]]:
    """One array per role on the working grid, a role not given an empty channel (as in training's
    sequence dropout, with a warning); the brain (nonzero in any); each sequence's coverage of it."""
    brain_full = np.zeros(given[reference].shape, bool)
    for arr in given.values():
        brain_full |= arr != 0
    coverage = coverage_of_brain(given, brain_full, names, warnings)
    for r in roles:
        if r not in given:
            warnings.append(f"no {r} given: its channel is left empty (the models saw sequences dropped in training; "
                            f"accuracy without {r} is in the model documentation)")
    arrays = [given[r] if r in given else np.zeros(brain_full.shape, np.float32) for r in roles]
    return arrays, brain_full, coverage
