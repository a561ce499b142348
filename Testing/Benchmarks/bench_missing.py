"""Accuracy with a sequence left out or covering part of the brain, on real cases a model did not train on.

For each model (a bundle or an ensemble) every case of ``--data`` that none of its members trained
on is segmented through ``segment`` five ways: with all four sequences; without T1; without T2
(both accepted by ``segment``: the channel is left empty, as in training's sequence dropout); and
with a T1 that covers only part of the brain (zeroed outside the middle half of its axial slices,
a slab acquisition, or a field of view that misses the top and bottom of the brain). A missing T1ce
or FLAIR is refused by ``segment`` (one line), so it is not measured. Printed: mean Dice WT / TC /
ET per condition over all cases, high-grade and low-grade, and the change from four sequences.

Run: python Testing/Benchmarks/bench_missing.py [--data ../shared/real-cases] [--models MODEL ...]
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
from typing import Dict

import numpy as np
import SimpleITK as sitk
import torch
from bench_real import trained_on

from BrainTumorSegLib.evaluation.cross_validation import grade_summary
from BrainTumorSegLib.evaluation.real_validation import case_table
from BrainTumorSegLib.evaluation.scoring import score_against
from BrainTumorSegLib.models import bundles, ensembles
from BrainTumorSegLib.pipeline import segment
from BrainTumorSegLib.read.cases import find_cases

HERE = os.path.dirname(os.path.abspath(__file__))
CONDITIONS = ("all four", "no T1", "no T2", "partial T1")


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "..", "shared", "real-cases"))
    ap.add_argument("--models", nargs="+", default=[bundles.DEFAULT_MODEL])
    args = ap.parse_args()
    cases = find_cases(args.data)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in args.models:
        models = ensembles.load_models(name)
        held_out = [c for c in cases if c.case_id not in trained_on(models)]
        rows: Dict[str, Dict] = {k: {} for k in CONDITIONS}
        seconds: Dict[str, Dict] = {k: {} for k in CONDITIONS}
        with tempfile.TemporaryDirectory() as tmp:
            for c in held_out:
                seqs = c.sequences
                variants = {"all four": seqs, "no T1": {r: p for r, p in seqs.items() if r != "t1"},
                            "no T2": {r: p for r, p in seqs.items() if r != "t2"},
                            "partial T1": dict(seqs, t1=partial(seqs["t1"], os.path.join(tmp, c.case_id + "_t1.nii.gz")))}
                for cond, inputs in variants.items():
                    res = segment(inputs, models, "cpu")
                    rows[cond][c.case_id] = score_against(res.labels, c.paths["seg"], res.label_scheme)
                    seconds[cond][c.case_id] = res.timings["total"]
                print(f"  {c.case_id} done", flush=True)
        print(f"\n{name}: {len(held_out)} cases it did not train on; mean Dice WT / TC / ET (change from all four)")
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


if __name__ == "__main__":
    main()
