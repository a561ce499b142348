"""Reproducible recipes. ``train_demo`` makes the shipped demo model from nothing but our code.

Recipe: phantoms with seed 1000 (training), 2000 (validation) and 3000 (held-out test);
``resunet`` with channels 16-32-64-128-128 (5.2 M parameters, 21 MB), patches of 96^3, batch 2,
AdamW 1e-3 with a cosine schedule, foreground oversampling 1/3, the standard augmentation.
The held-out test cases are segmented through the bundle with the full inference path and
scored with ``evaluate``'s metrics; the figures go into the manifest.
"""
from __future__ import annotations

import os
import shutil
from typing import Dict

import numpy as np

from ..models import bundles
from ..read.cases import find_cases
from ..training import TrainConfig, train

DEMO_OPTIONS = {"channels": [16, 32, 64, 128, 128], "blocks": [1, 2, 2, 2, 2]}
DEMO_NOTE = ("DEMO MODEL trained only on synthetic phantoms (MNI template with simulated tumors), "
             "not on patient data. Not for clinical use; its numbers say nothing about real MRI.")


def held_out_scores(bundle_dir: str, cases_dir: str) -> Dict[str, float]:
    from ..evaluation.scoring import score_against  # SimpleITK: not needed by the real recipe's pack runs
    from ..pipeline import segment

    b = bundles.load(bundle_dir)
    rows = []
    for case in find_cases(cases_dir):
        res = segment(case.sequences, b, "cpu")
        rows.append(score_against(res.labels, case.paths["seg"], res.label_scheme))
    return {f"dice_{r}": float(np.mean([m[r]["dice"] for m in rows])) for r in ("WT", "TC", "ET")} | \
        {f"hd95_{r}": float(np.mean([m[r]["hd95"] for m in rows])) for r in ("WT", "TC", "ET")} | {"cases": len(rows)}


def train_demo(workdir: str, out: str, n_train: int = 40, n_val: int = 3, n_test: int = 5,
               epochs: int = 15, iters: int = 45) -> str:
    from ..synthetic import phantom

    os.makedirs(workdir, exist_ok=True)
    dirs = {k: os.path.join(workdir, k) for k in ("train", "val", "test")}
    for key, seed, n in (("train", 1000, n_train), ("val", 2000, n_val), ("test", 3000, n_test)):
        phantom.generate(dirs[key], n, seed=seed)
    cfg = TrainConfig(network="resunet", options=DEMO_OPTIONS, epochs=epochs, iters_per_epoch=iters, batch=2,
                      patch=(96, 96, 96), seed=0, val_every=4)
    recipe = (f"braintumorseg train-demo --workdir W --out O --n-train {n_train} --n-val {n_val} "
              f"--n-test {n_test} --epochs {epochs} --iters {iters}")
    run = os.path.join(workdir, "run")
    bundle = train(cfg, find_cases(dirs["train"]), find_cases(dirs["val"]), run, resume=True,
                   bundle_manifest={"id": "brats-synthetic-demo", "demo": True, "clinical_use": False,
                                    "description": DEMO_NOTE, "recipe": recipe, "patch_size": [128, 128, 128],
                                    "training_data": f"{n_train} synthetic phantoms (seed 1000), "
                                                     f"{n_val} for validation (seed 2000)"})
    scores = held_out_scores(bundle, dirs["test"])
    manifest = bundles.read_manifest(bundle).to_json()
    manifest["metrics"]["held_out_synthetic"] = scores | {"seed": 3000}
    net = bundles.load(bundle).network
    if os.path.exists(out):
        shutil.rmtree(out)
    manifest.pop("weights_sha256")
    return bundles.save(net, out, manifest)
