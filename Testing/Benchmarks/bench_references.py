"""What the expert labels themselves allow: the working grid's ceiling and where the enhancing tumor enhances.

For each case of ``--data`` (BraTS layout, with ``*_seg``):

* **the working grid's ceiling**: the case preprocessed as ``segment`` does for a model of
  ``--spacing`` mm (2: the default's grid); each expert region (WT, TC, ET) taken to that grid as the
  share of each voxel it covers (linear resampling of its mask, as the training labels are made:
  ``preprocess.grid.labels_to_working``), back to the case's own grid as ``segment`` takes a
  model's probabilities back (linear, ``InverseTransform.to_reference``), cut at 0.5 and scored
  against the labels. A network whose probabilities were exactly those shares would score this:
  the most a model on that grid can reach without finer labels.
* **enhancement where the reference says enhancing tumor**: the median T1ce z-score inside the
  enhancing tumor, and the median of T1ce minus T1 there (each sequence z-scored over its own brain),
  against the T1ce's median in the brain outside the tumor. An enhancing tumor that does not lie
  above its T1 is one no model reading enhancement can find.

Prints one line per case, then the means over all cases and per grade (``cross_validation.GRADES``
where a case is known). Needs no model.

Run: python Testing/Benchmarks/bench_references.py [--data ../shared/real-cases] [--spacing 2]
"""
from __future__ import annotations

import argparse
import os
from typing import Dict, List

import numpy as np
import SimpleITK as sitk

from BrainTumorSegLib.evaluation.cross_validation import GRADES, grade_groups
from BrainTumorSegLib.evaluation.metrics import dice
from BrainTumorSegLib.labels import REGIONS, detect_scheme, labels_to_regions
from BrainTumorSegLib.preprocess.grid import CANONICAL, share_on_working
from BrainTumorSegLib.preprocess.normalise import zscore
from BrainTumorSegLib.preprocess.transform import PreprocessOptions, preprocess
from BrainTumorSegLib.read.cases import find_cases
from BrainTumorSegLib.read.images import read_image

HERE = os.path.dirname(os.path.abspath(__file__))


def round_trip(regions: np.ndarray, reference: sitk.Image, pre) -> np.ndarray:
    """Each (z, y, x) region mask on the reference grid to the cropped working grid as shares and
    back as ``segment`` takes probabilities back, cut at 0.5."""
    inv = pre.inverse
    out = []
    for mask in regions:
        img = sitk.GetImageFromArray(mask.astype(np.float32))
        img.CopyInformation(reference)
        share = share_on_working(sitk.DICOMOrient(img, CANONICAL), inv)
        out.append(inv.to_reference_array(share[inv.bbox], labels=False) > 0.5)
    return np.stack(out)


def zscored(path: str) -> np.ndarray:
    a = sitk.GetArrayFromImage(sitk.ReadImage(path)).astype(np.float32)
    return zscore(a, a != 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "..", "shared", "real-cases"))
    ap.add_argument("--spacing", type=float, default=2.0, help="the working grid's spacing in mm (default 2)")
    args = ap.parse_args()
    rows: Dict[str, Dict[str, float]] = {}
    print(f"{'case':24s} {'grade':9s} " + " ".join(f"{r} ceiling" for r in REGIONS)
          + "  ET mL | ET: T1ce, T1ce-T1 | brain T1ce")
    for case in find_cases(args.data):
        if "seg" not in case.paths:
            continue
        reference = read_image(case.paths["seg"], "label")
        labels = sitk.GetArrayFromImage(reference)
        regions = labels_to_regions(labels, detect_scheme(labels, case.paths["seg"]))
        pre = preprocess(case.sequences, PreprocessOptions(isotropic=args.spacing, register="auto", skull_strip="auto"))
        back = round_trip(regions, reference, pre)
        row = {r: dice(back[i], regions[i]) for i, r in enumerate(REGIONS)}
        et = regions[2]
        t1ce, t1 = zscored(case.paths["t1ce"]), zscored(case.paths["t1"])
        outside = (t1ce != 0) & ~regions[0]  # the brain outside the tumor (zscore leaves 0 outside the brain)
        enh = (f"{np.median(t1ce[et]):+.2f}, {np.median(t1ce[et] - t1[et]):+.2f}" if et.any() else "  (none)   ")
        ml = float(et.sum() * np.prod(reference.GetSpacing())) / 1000
        rows[case.case_id] = row
        print(f"{case.case_id:24s} {GRADES.get(case.case_id, '?'):9s} " + " ".join(f"{row[r]:10.3f}" for r in REGIONS)
              + f"  {ml:5.1f} | {enh:16s} | {np.median(t1ce[outside]):+.2f}", flush=True)
    print(f"\nmean ceiling on the {args.spacing:g} mm grid (Dice; ET of a case without ET and none made: 1)")
    groups: Dict[str, List[str]] = grade_groups(list(rows))
    for name, ids in groups.items():
        if ids:
            print(f"  {name:10s} n={len(ids):2d} " + " / ".join(f"{r} {np.mean([rows[c][r] for c in ids]):.3f}"
                                                         for r in REGIONS))


if __name__ == "__main__":
    main()
