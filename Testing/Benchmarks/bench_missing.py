"""Accuracy with a sequence left out or covering part of the brain, on real cases a model did not train on.

For each model (a bundle or an ensemble) every case of ``--data`` that none of its members trained
on is segmented through ``segment`` in each condition: with all four sequences; without T1;
without T2 (both accepted by ``segment``: the channel is left empty, as in training's sequence
dropout); with a T1 that covers only part of the brain (zeroed outside the middle half of its axial
slices: a slab acquisition, or a field of view that misses the top and bottom of the brain); and,
reported only, without T1ce and without FLAIR. ``segment`` refuses a case without T1ce or FLAIR
(one line), so for those two the file is read and its channel emptied after preprocessing (the
empty channel of training's sequence dropout; the working grid still comes from the T1ce). With ``--pool NAME`` the models are the
folds of one design and their held-out cases are pooled (out of fold). Every option of
``braintumorseg segment`` is accepted (give a fold ensemble's postprocessing to score the design as
shipped). Printed: mean Dice WT / TC / ET per condition over all cases, high-grade and low-grade,
and the change from four sequences.

Run: python Testing/Benchmarks/bench_missing.py [--data ../shared/real-cases] [--models MODEL ...]
     python Testing/Benchmarks/bench_missing.py --models brats-glioma-v9-fold0 ... brats-glioma-v9-fold4 \
         --pool v9 --min-et-voxels 500 --min-component-voxels 1000
"""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import tempfile
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np
import SimpleITK as sitk
import torch
from bench_real import trained_on

from BrainTumorSegLib import pipeline
from BrainTumorSegLib.evaluation.cross_validation import grade_summary
from BrainTumorSegLib.evaluation.real_validation import case_table
from BrainTumorSegLib.evaluation.scoring import score_against
from BrainTumorSegLib.models import bundles, ensembles
from BrainTumorSegLib.preprocess.transform import Preprocessed
from BrainTumorSegLib.read.cases import Case, find_cases
from BrainTumorSegLib.segment_options import SegmentOptions, add_arguments

HERE = os.path.dirname(os.path.abspath(__file__))
CONDITIONS = ("all four", "no T1", "no T2", "partial T1", "no T1ce", "no FLAIR")


def partial(path: str, out: str) -> str:
    """The image zeroed outside the middle half of its slices (its third axis: axial for BraTS files)."""
    img = sitk.ReadImage(path)
    arr = sitk.GetArrayFromImage(img)
    n = arr.shape[0]
    arr[: n // 4] = 0
    arr[n - n // 4:] = 0
    res = sitk.GetImageFromArray(arr)
    res.CopyInformation(img)
    sitk.WriteImage(res, out)
    return out


@contextlib.contextmanager
def channel_emptied(role: Optional[str]) -> Iterator[None]:
    """While open, ``segment`` sees the channel of ``role`` empty after preprocessing."""
    real = pipeline.preprocess

    def emptied(*args: Any, **kwargs: Any) -> Preprocessed:
        pre = real(*args, **kwargs)
        pre.data[pre.roles.index(role)] = 0
        return pre

    pipeline.preprocess = emptied if role else real
    try:
        yield
    finally:
        pipeline.preprocess = real


def variants(c: Case, tmp: str) -> Dict[str, Tuple[Mapping, Optional[str]]]:
    """Each condition's inputs and the channel to empty after preprocessing."""
    seqs = c.sequences
    return {"all four": (seqs, None), "no T1": ({r: p for r, p in seqs.items() if r != "t1"}, None),
            "no T2": ({r: p for r, p in seqs.items() if r != "t2"}, None),
            "partial T1": (dict(seqs, t1=partial(seqs["t1"], os.path.join(tmp, c.case_id + "_t1.nii.gz"))), None),
            "no T1ce": (seqs, "t1ce"), "no FLAIR": (seqs, "flair")}


def score_conditions(models: List[bundles.Bundle], cases: List[Case], options: SegmentOptions
                     ) -> Tuple[Dict[str, Dict], Dict[str, Dict]]:
    rows: Dict[str, Dict] = {k: {} for k in CONDITIONS}
    seconds: Dict[str, Dict] = {k: {} for k in CONDITIONS}
    with tempfile.TemporaryDirectory() as tmp:
        for c in cases:
            for cond, (inputs, empty) in variants(c, tmp).items():
                with channel_emptied(empty):
                    res = pipeline.segment(inputs, models, options=options)
                rows[cond][c.case_id] = score_against(res.labels, c.paths["seg"], res.label_scheme)
                seconds[cond][c.case_id] = res.timings["total"]
            print(f"  {c.case_id} done", flush=True)
    return rows, seconds


def print_conditions(title: str, rows: Dict[str, Dict], seconds: Dict[str, Dict]) -> None:
    print(f"\n{title}; mean Dice WT / TC / ET (change from all four)")
    base = None
    for cond in CONDITIONS:
        g = grade_summary(case_table(rows[cond], seconds[cond])[0])
        base = base or g
        cells = []
        for k in ("all", "HGG", "low-grade"):
            if g[k]["cases"]:
                d = [g[k][f"dice_{r}"] for r in ("WT", "TC", "ET")]
                b = [base[k][f"dice_{r}"] for r in ("WT", "TC", "ET")]
                cells.append(f"{k} ({g[k]['cases']}) " + " / ".join(f"{v:.3f}" for v in d)
                             + " (" + " / ".join(f"{v - w:+.3f}" for v, w in zip(d, b)) + ")")
        print(f"  {cond:<11} " + "   ".join(cells))
    print("  mean Dice over regions, all cases: " + ", ".join(
        f"{cond} {np.mean([rows[cond][c][r]['dice'] for c in rows[cond] for r in ('WT', 'TC', 'ET')]):.3f}"
        for cond in CONDITIONS))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "..", "shared", "real-cases"))
    ap.add_argument("--models", nargs="+", default=[bundles.DEFAULT_MODEL])
    ap.add_argument("--pool", metavar="NAME", help="the models are the folds of one design: pool their held-out cases")
    add_arguments(ap)  # every option of `braintumorseg segment`
    args = ap.parse_args()
    options = SegmentOptions.from_args(args)
    cases = find_cases(args.data)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"options {options.to_argv() or 'defaults'}")
    pooled: Tuple[Dict[str, Dict], Dict[str, Dict]] = ({k: {} for k in CONDITIONS}, {k: {} for k in CONDITIONS})
    for name in args.models:
        models = ensembles.load_models(name)
        held_out = [c for c in cases if c.case_id not in trained_on(models)]
        rows, seconds = score_conditions(models, held_out, options)
        for k in CONDITIONS:
            pooled[0][k].update(rows[k])
            pooled[1][k].update(seconds[k])
        if not args.pool and held_out:
            print_conditions(f"{name}: {len(held_out)} cases it did not train on", rows, seconds)
    if args.pool and pooled[0]["all four"]:
        print_conditions(f"{args.pool}: out of fold, {len(pooled[0]['all four'])} cases pooled over "
                         f"{len(args.models)} models", *pooled)


if __name__ == "__main__":
    main()
