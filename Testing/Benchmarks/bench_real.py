"""Accuracy and time on the real validation cases, through the full ``segment`` path.

For each model, every validation case of the real-data recipe (``real_recipe.VALIDATION``, cases
no shipped model trained on) is segmented from its original files with the model's own default
settings, and scored against the expert labels: Dice, HD95 (mm, max of the directed 95th
percentiles; 373.13 when exactly one mask is empty) and volume error (mL, predicted minus
reference) per region, and seconds per case. Prints one table per model and a summary line each.

Run: python Testing/Benchmarks/bench_real.py [--data ../shared/real-cases]
     [--models brats-glioma-v1 brats-synthetic-demo] [--device cpu]
"""
from __future__ import annotations

import argparse
import os
import platform

import torch

from BrainTumorSegLib import bundles
from BrainTumorSegLib.evaluation import score_against
from BrainTumorSegLib.inference import segment
from BrainTumorSegLib.labels import REGIONS
from BrainTumorSegLib.real_recipe import case_table, split

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "..", "shared", "real-cases"))
    ap.add_argument("--models", nargs="+", default=[bundles.DEFAULT_MODEL, "brats-synthetic-demo"])
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    _, val_cases = split(args.data)
    print(f"{len(val_cases)} validation cases; {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    summary = []
    for name in dict.fromkeys(args.models):
        b = bundles.load_models(name)  # one bundle, or an ensemble's members
        rows, seconds = {}, {}
        for c in val_cases:
            res = segment(c.sequences, b, args.device)
            rows[c.case_id] = score_against(res.labels, c.paths["seg"], res.label_scheme)
            seconds[c.case_id] = res.timings["total"]
        per_case, mean = case_table(rows, seconds)
        print(f"\n{name}{' (demo)' if any(m.demo for m in b) else ''}")
        print(f"{'case':<24}" + "".join(f"{'Dice ' + r:>9}" for r in REGIONS) + "".join(f"{'HD95 ' + r:>9}" for r in REGIONS)
              + "".join(f"{'dV ' + r + ' mL':>11}" for r in REGIONS) + f"{'s':>7}")
        mean_row = {r: {k: mean[f"{k}_{r}"] for k in ("dice", "hd95", "volume_error_ml")} for r in REGIONS}
        for cid, row in list(per_case.items()) + [("mean", dict(mean_row, seconds=mean["seconds"]))]:
            print(f"{cid:<24}" + "".join(f"{row[r]['dice']:>9.3f}" for r in REGIONS)
                  + "".join(f"{row[r]['hd95']:>9.1f}" for r in REGIONS)
                  + "".join(f"{row[r]['volume_error_ml']:>11.1f}" for r in REGIONS) + f"{row['seconds']:>7.1f}")
        summary.append((name, mean))
    print("\nsummary (mean over the validation cases)")
    for mid, m in summary:
        print(f"  {mid:<22} Dice WT {m['dice_WT']:.3f} TC {m['dice_TC']:.3f} ET {m['dice_ET']:.3f}  "
              f"HD95 WT {m['hd95_WT']:.1f} TC {m['hd95_TC']:.1f} ET {m['hd95_ET']:.1f} mm  {m['seconds']:.1f} s/case")


if __name__ == "__main__":
    main()
