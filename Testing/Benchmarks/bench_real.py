"""Accuracy and time on real cases each model did not train on, through the full ``segment`` path.

Each model (a bundle or an ensemble, by name or folder) is scored on the cases of ``--data`` that
none of its members trained on (their manifests' ``training_data.train``): for a single-split
model the recipe's validation cases and every case added since; for a cross-validation fold model
its held-out fold (the shipped ensemble's five folds together saw every shared case: score them
with ``--pool``). With ``--pool NAME`` the listed models are the folds of one design and their
held-out cases are pooled into one out-of-fold table. Every case is segmented from its original
files with the model's own default settings and scored against the expert labels: Dice, HD95 (mm,
max of the directed 95th percentiles; 373.13 when exactly one mask is empty) and volume error (mL,
predicted minus reference) per region, seconds per case; then the means over all cases, the
high-grade ones, the low-grade ones (LGG and no enhancing tumor) and those with little
enhancement, and how many cases without enhancing tumor got none (``cross_validation.grade_summary``);
and the cases whose result had little or no enhancing tumor against the others, as ``segment``'s
warning quotes them (``postprocess.reliability``).

Every option of ``braintumorseg segment`` is accepted and applies to every model (``--tta``,
``--min-et-voxels N``...): fold models pooled with ``--pool`` have no postprocessing of their own,
so give their ensemble's to score the design as shipped. With ``--against OLD`` only the cases
that OLD did not train on either are scored, and OLD is scored on the same cases with its own
defaults: a comparison of two designs on common unseen cases.

Run: python Testing/Benchmarks/bench_real.py [--data ../shared/real-cases]
     [--models brats-glioma-ensemble-v9 brats-synthetic-demo] [--pool NAME] [--against OLD] [--device cpu]
     python Testing/Benchmarks/bench_real.py --models brats-glioma-v9-fold0 ... brats-glioma-v9-fold4 --pool v9 \
         --min-et-voxels 500 --min-component-voxels 1000 [--tta] [--against OLD]
"""
from __future__ import annotations

import argparse
import os
import platform
from typing import Dict, List

import torch

from BrainTumorSegLib.evaluation.cross_validation import GRADES, grade_summary
from BrainTumorSegLib.evaluation.real_validation import case_table
from BrainTumorSegLib.evaluation.scoring import score_against
from BrainTumorSegLib.labels import REGIONS
from BrainTumorSegLib.models import bundles, ensembles
from BrainTumorSegLib.pipeline import segment
from BrainTumorSegLib.postprocess import reliability
from BrainTumorSegLib.read.cases import Case, find_cases
from BrainTumorSegLib.segment_options import SegmentOptions, add_arguments

HERE = os.path.dirname(os.path.abspath(__file__))


def trained_on(models: List[bundles.Bundle]) -> set:
    """The case ids any of these bundles trained on."""
    return set().union(*(b.manifest.training_cases for b in models))


def score(models: List[bundles.Bundle], cases: List[Case], options: SegmentOptions):
    rows, seconds = {}, {}
    for c in cases:
        res = segment(c.sequences, models, options=options)
        rows[c.case_id] = score_against(res.labels, c.paths["seg"], res.label_scheme)
        seconds[c.case_id] = res.timings["total"]
        print(f"  {c.case_id}: {res.timings['total']:.1f} s", flush=True)
    return rows, seconds


def print_table(title: str, per_case: Dict, mean: Dict) -> Dict:
    print(f"\n{title}")
    print(f"{'case':<24}{'grade':>10}" + "".join(f"{'Dice ' + r:>9}" for r in REGIONS)
          + "".join(f"{'HD95 ' + r:>9}" for r in REGIONS) + "".join(f"{'dV ' + r + ' mL':>11}" for r in REGIONS) + f"{'s':>7}")
    for cid, row in per_case.items():
        print(f"{cid:<24}{GRADES.get(cid, '?'):>10}" + "".join(f"{row[r]['dice']:>9.3f}" for r in REGIONS)
              + "".join(f"{row[r]['hd95']:>9.1f}" for r in REGIONS)
              + "".join(f"{row[r]['volume_error_ml']:>11.1f}" for r in REGIONS) + f"{row['seconds']:>7.1f}")
    groups = grade_summary(per_case)
    for g in ("all", "HGG", "low-grade", "little-ET"):
        m = groups[g]
        if m["cases"]:
            print(f"{'mean ' + g + ' (' + str(m['cases']) + ')':<34}" + "".join(f"{m['dice_' + r]:>9.3f}" for r in REGIONS)
                  + "".join(f"{m['hd95_' + r]:>9.1f}" for r in REGIONS)
                  + "".join(f"{m['volume_error_ml_' + r]:>11.1f}" for r in REGIONS))
    w = groups["without_et"]
    print(f"cases without enhancing tumor given none: {w['none_predicted']} of {w['cases']}; "
          f"{mean['seconds']:.1f} s per case")
    for g, m in reliability.pattern_summary(per_case).items():  # what segment's warning quotes
        if m["cases"]:
            print(f"{'little or no ET predicted' if g == 'pattern' else 'the others'} ({m['cases']}): Dice "
                  + " / ".join(f"{m['dice_' + r]:.3f}" for r in REGIONS) + f", WT volume error {m['volume_error_ml_WT']:.1f} mL")
    return groups


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "..", "shared", "real-cases"))
    ap.add_argument("--models", nargs="+", default=[bundles.DEFAULT_MODEL, "brats-synthetic-demo"])
    ap.add_argument("--pool", metavar="NAME", help="the models are the folds of one design: pool their held-out cases")
    ap.add_argument("--against", metavar="OLD", help="also score OLD (its own defaults) on the same cases, "
                                                     "keeping only cases it did not train on either")
    add_arguments(ap)  # every option of `braintumorseg segment`, --device and --tta among them
    args = ap.parse_args()
    options = SegmentOptions.from_args(args)
    cases = find_cases(args.data)
    print(f"{len(cases)} cases in {args.data}; {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, options {options.to_argv() or 'defaults'}")
    against = ensembles.load_models(args.against) if args.against else []
    seen_by_against = trained_on(against) if against else set()
    pooled_rows: Dict = {}
    pooled_seconds: Dict = {}
    summary = []
    for name in dict.fromkeys(args.models):
        b = ensembles.load_models(name)  # one bundle, or an ensemble's members
        seen = trained_on(b) | seen_by_against
        held_out = [c for c in cases if c.case_id not in seen]
        print(f"\n{name}: {len(held_out)} cases it did not train on" + (f" (nor {args.against})" if against else ""))
        if not held_out:
            print("  nothing to score (an ensemble of all folds: score its members with --pool)")
            continue
        rows, seconds = score(b, held_out, options)
        pooled_rows.update(rows)
        pooled_seconds.update(seconds)
        if not args.pool:
            per_case, mean = case_table(rows, seconds)
            summary.append((name, print_table(name + (" (demo)" if any(m.demo for m in b) else ""), per_case, mean)))
    if args.pool and pooled_rows:
        per_case, mean = case_table(pooled_rows, pooled_seconds)
        summary.append((args.pool, print_table(f"{args.pool}: out of fold, pooled over {len(args.models)} models",
                                               per_case, mean)))
    if against and pooled_rows:
        common = [c for c in cases if c.case_id in pooled_rows]
        print(f"\n{args.against}: the same {len(common)} cases, its own defaults")
        rows, seconds = score(against, common, SegmentOptions(device=options.device))
        summary.append((args.against, print_table(args.against, *case_table(rows, seconds))))
    print("\nsummary (mean Dice WT / TC / ET over the cases each model did not train on)")
    for mid, g in summary:
        print(f"  {mid:<28}" + "  ".join(f"{k} ({g[k]['cases']}) {g[k]['dice_WT']:.3f} / {g[k]['dice_TC']:.3f} / "
                                         f"{g[k]['dice_ET']:.3f}" for k in ("all", "HGG", "low-grade") if g[k]["cases"]))


if __name__ == "__main__":
    main()
