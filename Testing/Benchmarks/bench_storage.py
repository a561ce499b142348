"""Half-precision weights against full: labels and Dice on the real cases.

Each model is converted (``braintumorseg convert --storage float16``, weights stored as fp16,
computing in fp32) and both versions segment every case of ``--data`` through ``segment``; printed
per case: the share of voxels with identical labels (of the whole image, and, stricter, of the
voxels either version calls tumor) and the Dice change per region against the expert labels; then
the smallest shares and the mean Dice change. The project's rule for adopting fp16 storage: labels
>= 99.9 % identical (of the image) on every case and mean Dice moved by less than 0.001.
An ensemble is compared member by member converted, averaged as the ensemble does.

With ``--held-out`` only the cases none of the members trained on are used (a cross-validation fold
model: its held-out fold).

Run: python Testing/Benchmarks/bench_storage.py [--data ../shared/real-cases] [--model brats-glioma-ensemble-v9]
     [--held-out]
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile

import numpy as np
import SimpleITK as sitk
import torch

from BrainTumorSegLib.evaluation.scoring import score_against
from BrainTumorSegLib.labels import REGIONS
from BrainTumorSegLib.models import bundles, catalog, ensembles
from BrainTumorSegLib.pipeline import segment
from BrainTumorSegLib.read.cases import find_cases

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "..", "shared", "real-cases"))
    ap.add_argument("--model", default=bundles.DEFAULT_MODEL)
    ap.add_argument("--held-out", action="store_true", help="only the cases none of the members trained on")
    args = ap.parse_args()
    full = ensembles.load_models(args.model)
    print(f"{args.model}: {len(full)} member(s); {platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        half = [bundles.load(bundles.save(b.network, os.path.join(tmp, b.id), b.manifest.to_json(), "float16"))
                for b in full]
        sizes = [(catalog.size_on_disk(b.path), catalog.size_on_disk(h.path)) for b, h in zip(full, half)]
        print("weights on disk: " + ", ".join(f"{a / 1e6:.1f} MB -> {b / 1e6:.1f} MB" for a, b in sizes))
        same, deltas = [], []
        seen = set().union(*(b.manifest.training_cases for b in full)) if args.held_out else set()
        for c in [c for c in find_cases(args.data) if c.case_id not in seen]:
            a = segment(c.sequences, full, "cpu")
            b = segment(c.sequences, half, "cpu")
            la, lb = sitk.GetArrayViewFromImage(a.labels), sitk.GetArrayViewFromImage(b.labels)
            tumor = (la > 0) | (lb > 0)
            differ = np.count_nonzero(la != lb)
            share = 1.0 - differ / max(1, np.count_nonzero(tumor))
            sa = score_against(a.labels, c.paths["seg"], a.label_scheme)
            sb = score_against(b.labels, c.paths["seg"], b.label_scheme)
            d = [sb[r]["dice"] - sa[r]["dice"] for r in REGIONS]
            same.append((1.0 - differ / la.size, share))
            deltas.append(d)
            print(f"{c.case_id:<24} identical labels {100 * same[-1][0]:8.4f} % of the image, {100 * share:8.4f} % of "
                  "tumor voxels; Dice change "
                  + " ".join(f"{r} {v:+.5f}" for r, v in zip(REGIONS, d)), flush=True)
    mean = np.mean(deltas, 0)
    image, tumor_share = (min(s[i] for s in same) for i in (0, 1))
    print(f"\nsmallest share identical: {100 * image:.4f} % of the image, {100 * tumor_share:.4f} % of the voxels either "
          "version calls tumor; mean Dice change " + " ".join(f"{r} {v:+.5f}" for r, v in zip(REGIONS, mean)))
    ok = image >= 0.999 and np.all(np.abs(mean) < 0.001)
    print("fp16 storage " + ("meets" if ok else "does NOT meet") + " the rule (>= 99.9 % of the image identical, "
          "|mean Dice change| < 0.001)")


if __name__ == "__main__":
    main()
