"""The recipe of the real-data glioma model (``braintumorseg train-recipe brats-glioma``).

Data: 24 expert-labelled BraTS 2018 training cases (skull-stripped, co-registered, 1 mm; labels
0/1/2/4) read from a folder outside the repository. The split below is fixed before training and
never changes: 5 validation cases from three institution prefixes (2013, CBICA, TCIA), the other
19 for training. Validation figures are measured through the full ``segment`` path on the
original 1 mm files, and the postprocessing defaults are chosen on those same validation cases
(never on other data).

Variants train the same residual U-Net (16-32-64-128-128, 5.2 M parameters) under one CPU budget:

- ``2mm``: a 2 mm isotropic working grid; patches of 64^3 voxels see 128 mm, so the whole brain
  crop (about 76 x 92 x 76 voxels) is eight windows at overlap 0.5, and probabilities are
  interpolated back onto the 1 mm grid before labels are made (design (c) of the issue: cheaper to
  train and to run on a CPU);
- ``1mm``: the input's own 1 mm grid, same patch size in voxels, from random initialisation;
- ``1mm-phantom``: as ``1mm``, initialised from the phantom-trained demo model;
- ``2mm-phantom``: as ``2mm``, initialised from the demo model (tried: behind ``2mm``);
- ``2mm-clinical``: ``2mm`` continued from the shipped ``brats-glioma-v1`` at half the learning
  rate with clinical augmentation (``training.data``: sequences as if acquired in 3-7 mm slices
  along an axis of their own, brain masks 1-2 voxels tighter), for scans that ``segment`` strips,
  registers and resamples itself;
- ``2mm-clinical-scratch``: ``2mm`` with clinical augmentation from the start, exported as
  ``brats-glioma-clinaug-v1`` (shipped; the default ensemble averages it with ``brats-glioma-v1``).
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from . import bundles
from .cases import Case, find_cases
from .errors import InputError
from .evaluation import score_images
from .imageio import read_image
from .inference import SegmentOptions, segment
from .labels import REGIONS
from .networks import build
from .postprocessing import PostprocessOptions, postprocess
from .recipes import DEMO_OPTIONS
from .segment_options import NO_POSTPROCESSING
from .training import TrainConfig, check_cases, load_checkpoint, run_manifest, train

MODEL_ID = "brats-glioma-v1"
VALIDATION = ("Brats18_2013_20_1", "Brats18_CBICA_AQO_1", "Brats18_CBICA_ASE_1",
              "Brats18_TCIA01_231_1", "Brats18_TCIA02_370_1")
SAMPLE_CASE = "Brats18_TCIA01_231_1"  # a validation case (CC BY 3.0) shipped as the quick start's sample

CITATIONS = [
    "Menze BH et al. The Multimodal Brain Tumor Image Segmentation Benchmark (BRATS). "
    "IEEE TMI 34(10):1993-2024, 2015. doi:10.1109/TMI.2014.2377694",
    "Bakas S et al. Advancing The Cancer Genome Atlas glioma MRI collections with expert segmentation labels and "
    "radiomic features. Sci Data 4:170117, 2017. doi:10.1038/sdata.2017.117",
    "Bakas S et al. Identifying the Best Machine Learning Algorithms for Brain Tumor Segmentation, Progression "
    "Assessment, and Overall Survival Prediction in the BRATS Challenge. arXiv:1811.02629, 2018",
    "Bakas S et al. Segmentation Labels and Radiomic Features for the Pre-operative Scans of the TCGA-GBM collection. "
    "The Cancer Imaging Archive, 2017. doi:10.7937/K9/TCIA.2017.KLXWJJ1Q",
    "Bakas S et al. Segmentation Labels and Radiomic Features for the Pre-operative Scans of the TCGA-LGG collection. "
    "The Cancer Imaging Archive, 2017. doi:10.7937/K9/TCIA.2017.GJQ7R0EF",
]
LICENCE = ("Research use only; not a medical device and not validated for clinical use. Trained on BraTS "
           "2018 training data released for research under the BraTS data-use terms (TCGA-derived cases: "
           "The Cancer Imaging Archive, CC BY 3.0); any use must cite the papers listed in 'citations'.")
DESCRIPTION = ("Residual U-Net trained on 19 real, expert-labelled BraTS 2018 glioma cases (skull-stripped, "
               "co-registered, 1 mm) on a 2-core CPU. Research use only, not for clinical use. Works on "
               "BraTS-preprocessed input (segment prepares clinical scans so first); validation figures (5 "
               "held-out BraTS cases) are in 'metrics'.")
CLINICAL_AUGMENTATION = (" Trained with clinical augmentation: sequences as if acquired in thick slices, brain "
                         "masks a little tighter.")

NOTE = ("research model trained on 19 real BraTS 2018 cases, not a medical device and not for clinical "
        "use; it was trained on skull-stripped, co-registered BraTS data (segment strips and registers "
        "clinical scans first; check the brain mask)")


@dataclass(frozen=True)
class Variant:
    spacing: Optional[float]
    patch: Tuple[int, int, int]
    window: Tuple[int, int, int]    # inference window (voxels of the working grid)
    init_from: Optional[str] = None
    lr: Optional[float] = None      # None: the network's own default
    clinical_augmentation: bool = False
    model_id: str = MODEL_ID


VARIANTS: Dict[str, Variant] = {
    "2mm": Variant(spacing=2.0, patch=(64, 64, 64), window=(64, 64, 64)),
    "1mm": Variant(spacing=None, patch=(64, 64, 64), window=(128, 128, 128)),
    "1mm-phantom": Variant(spacing=None, patch=(64, 64, 64), window=(128, 128, 128),
                           init_from="brats-synthetic-demo"),
    # the next candidate: the shipped design with the phantom-pretrained start that helped at 1 mm
    "2mm-phantom": Variant(spacing=2.0, patch=(64, 64, 64), window=(64, 64, 64), init_from="brats-synthetic-demo"),
    "2mm-clinical": Variant(spacing=2.0, patch=(64, 64, 64), window=(64, 64, 64), init_from=MODEL_ID, lr=5e-4,
                            clinical_augmentation=True),
    "2mm-clinical-scratch": Variant(spacing=2.0, patch=(64, 64, 64), window=(64, 64, 64), clinical_augmentation=True,
                                    model_id="brats-glioma-clinaug-v1"),
}
POSTPROCESS_GRID = {"min_et_voxels": (0, 200, 500), "min_component_voxels": (0, 200, 1000)}


def split(data_dir: str) -> Tuple[List[Case], List[Case]]:
    """The fixed training and validation cases found in ``data_dir``."""
    cases = check_cases(find_cases(data_dir))
    ids = {c.case_id for c in cases}
    missing = [v for v in VALIDATION if v not in ids]
    if missing:
        raise InputError(data_dir, f"lacks the recipe's validation case(s) {', '.join(missing)}")
    return [c for c in cases if c.case_id not in VALIDATION], [c for c in cases if c.case_id in VALIDATION]


def case_table(rows: Mapping[str, Dict[str, Dict[str, float]]], seconds: Mapping[str, float]
               ) -> Tuple[Dict[str, Dict], Dict[str, float]]:
    """Per-case Dice, HD95 and volume error (mL, predicted minus reference) per region and seconds,
    and their means, from ``case_metrics`` rows keyed by case id."""
    per_case: Dict[str, Dict] = {cid: {r: {"dice": m[r]["dice"], "hd95": m[r]["hd95"],
                          "volume_error_ml": m[r]["volume_pred_ml"] - m[r]["volume_ref_ml"]} for r in REGIONS}
                | {"seconds": seconds[cid]} for cid, m in rows.items()}
    mean = {f"{k}_{r}": float(np.mean([per_case[c][r][k] for c in per_case]))
            for k in ("dice", "hd95", "volume_error_ml") for r in REGIONS}
    mean["seconds"] = float(np.mean(list(seconds.values())))
    return per_case, mean


def validate_bundle(bundle_dir: Union[str, Sequence[str]], cases: Sequence[Case], device: str = "cpu", log=print,
                    postprocessing: Optional[PostprocessOptions] = None) -> Tuple[Dict, PostprocessOptions]:
    """Segment ``cases`` through the full ``segment`` path; per-case and mean Dice, HD95 and volume
    error per region, the seconds per case, and the postprocessing setting with the best mean Dice
    on these cases (postprocessing runs on the labels ``segment`` made with it switched off), or
    ``postprocessing`` when given. ``bundle_dir`` may be an ensemble, or a list of models."""
    b = [x for m in ([bundle_dir] if isinstance(bundle_dir, str) else bundle_dir) for x in bundles.load_models(m)]
    cases_by_id = {c.case_id: c for c in cases}
    raw, refs, seconds = {}, {}, {}
    for c in cases:
        res = segment(c.sequences, b, device, SegmentOptions(**NO_POSTPROCESSING))
        raw[c.case_id] = res.labels
        refs[c.case_id] = read_image(c.paths["seg"], "label")
        seconds[c.case_id] = res.timings["total"]
        log(f"validation {c.case_id}: {res.timings['total']:.1f} s")
    scheme = b[0].manifest.label_scheme

    def postprocessed(labels: sitk.Image, post: PostprocessOptions) -> sitk.Image:
        out = sitk.GetImageFromArray(postprocess(sitk.GetArrayViewFromImage(labels), scheme, post))
        out.CopyInformation(labels)
        return out

    def run(post: PostprocessOptions) -> Dict[str, Dict[str, Dict[str, float]]]:
        return {cid: score_images(postprocessed(raw[cid], post), refs[cid], pred_scheme=scheme,
                                  pred_name=cid, ref_name=cases_by_id[cid].paths["seg"]) for cid in raw}

    candidates = [postprocessing] if postprocessing else [
        PostprocessOptions(min_et_voxels=et, min_component_voxels=comp)
        for et, comp in itertools.product(POSTPROCESS_GRID["min_et_voxels"], POSTPROCESS_GRID["min_component_voxels"])]
    mean_dice = []
    for post in candidates:
        rows = run(post)
        mean_dice.append(float(np.mean([rows[c][r]["dice"] for c in rows for r in REGIONS])))
    chosen = candidates[int(np.argmax(mean_dice))]
    per_case, mean = case_table(run(chosen), seconds)
    report = {"cases": list(per_case), "per_case": per_case, "mean": mean, "through": "full segment path, 1 mm reference grid",
              "hd95": "mm, max of the directed 95th percentiles; 373.13 mm when exactly one mask is empty"}
    if postprocessing:
        report["postprocessing"] = asdict(postprocessing)
    else:
        report["postprocessing_search"] = {"grid": POSTPROCESS_GRID,
                                           "mean_dice": [[asdict(p), d] for p, d in zip(candidates, mean_dice)]}
    return report, chosen


def ensemble_manifest(data_dir: str, models: Sequence[str], log=print) -> Dict:
    """The manifest fields of an ensemble of this recipe's models (bundle folders): validated through ``segment`` on
    the recipe's validation cases with its first member's postprocessing (what ``segment`` applies),
    the members' training data, licence and citations. Members must not have trained on a
    validation case."""
    parts = [bundles.read_manifest(m) for m in models]
    _, val = split(data_dir)
    trained: List[set] = []
    for m, part in zip(models, parts):
        data = part.document.get("training_data")
        ids = data.get("train") if isinstance(data, dict) else None
        if not (isinstance(ids, list) and ids and not set(map(str, ids)) & set(VALIDATION)):
            raise InputError(m, "is not a model of this recipe: its manifest lists no training cases apart from the "
                                "validation cases")
        trained.append(set(map(str, ids)))
    try:
        post = PostprocessOptions(**parts[0].postprocessing)
    except TypeError:
        raise InputError(models[0], f"has postprocessing settings this version does not know: {parts[0].postprocessing}"
                         ) from None
    report, _ = validate_bundle(list(models), val, log=log, postprocessing=post)
    train_ids = sorted(set().union(*trained))
    return {"metrics": {"validation_segment": report}, "licence": LICENCE, "citations": CITATIONS, "note": NOTE,
            "demo": False, "clinical_use": False,
            "training_data": {"source": "BraTS 2018 training cases, BraTS 2021 file layout", "train": train_ids,
                              "validation": [c.case_id for c in val]}}


@dataclass
class Plan:
    """Everything a variant's run is made of: settings, fixed split, the manifest's own fields."""
    cfg: TrainConfig
    train_cases: List[Case]
    val_cases: List[Case]
    init: Optional[bundles.Bundle]
    extra: Dict


def export_folder(run_dir: str, variant: str) -> str:
    """Where a run of ``variant`` writes its bundle by default: ``run_dir/<its model id>``."""
    if variant not in VARIANTS:
        raise InputError(None, f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    return os.path.join(run_dir, VARIANTS[variant].model_id)


def plan(data_dir: str, variant: str, epochs: int, iters: int, seed: int, init_from: Optional[str] = None) -> Plan:
    """The run of ``variant``; ``init_from`` (a bundle) replaces the variant's initial weights, e.g.
    to continue from the last exported model when a run folder was lost."""
    if variant not in VARIANTS:
        raise InputError(None, f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    v = VARIANTS[variant]
    train_cases, val_cases = split(data_dir)
    cfg = TrainConfig(network="resunet", options=DEMO_OPTIONS, epochs=epochs, iters_per_epoch=iters, batch=2,
                      patch=v.patch, seed=seed, val_every=2, spacing=v.spacing, lr=v.lr,
                      clinical_augmentation=v.clinical_augmentation)
    recipe = (f"braintumorseg train-recipe brats-glioma --data DATA --out RUNDIR --variant {variant} "
              f"--epochs {epochs} --iters {iters} --seed {seed}" + (f" --init-from {init_from}" if init_from else ""))
    start = init_from or v.init_from
    init = bundles.load(start) if start else None
    description = DESCRIPTION + (CLINICAL_AUGMENTATION if v.clinical_augmentation else "")
    extra = {"id": v.model_id, "demo": False, "clinical_use": False, "description": description, "note": NOTE,
             "recipe": recipe, "variant": variant, "patch_size": list(v.window), "licence": LICENCE,
             "citations": CITATIONS,
             "training_data": {"source": "BraTS 2018 training cases, BraTS 2021 file layout",
                               "train": [c.case_id for c in train_cases],
                               "validation": [c.case_id for c in val_cases]}}
    if init is not None:
        extra["initialised_from"] = {"id": init.id, "weights_sha256": init.manifest.weights_sha256}
    return Plan(cfg, train_cases, val_cases, init, extra)


def finish(net, manifest: Dict, val_cases: Sequence[Case], out: str, log=print) -> str:
    """Validate the network through ``segment``, store the chosen postprocessing and the figures
    in its manifest, and write the final bundle to ``out`` (replacing an earlier one)."""
    manifest = {k: v for k, v in manifest.items() if k != "weights_sha256"}
    parent = os.path.dirname(os.path.abspath(out))
    with tempfile.TemporaryDirectory(prefix=".staging-", dir=parent) as tmp:
        staged = bundles.save(net, os.path.join(tmp, "bundle"), manifest)
        report, post = validate_bundle(staged, val_cases, log=log)
    manifest["postprocessing"] = asdict(post)
    manifest.setdefault("metrics", {})["validation_segment"] = report
    if os.path.exists(out):
        shutil.rmtree(out)
    return bundles.save(net, out, manifest)


def train_real(data_dir: str, run_dir: str, variant: str = "2mm", epochs: int = 30, iters: int = 100,
               seed: int = 0, resume: bool = True, export: Optional[str] = None, cache_dir: Optional[str] = None,
               init_from: Optional[str] = None, log=print) -> str:
    """Train (or resume) one variant, validate it through ``segment`` and export the bundle.

    Args:
        data_dir: folder holding the 24 real cases (``../shared/real-cases``).
        run_dir: run folder: config, cache, checkpoints, log, the trained bundle.
        variant: a key of ``VARIANTS``.
        epochs, iters: training length (epochs of ``iters`` iterations of batch 2).
        seed: the run's seed.
        resume: continue from the run folder's last checkpoint when there is one.
        export: where to write the final bundle (default ``run_dir/<the variant's model id>``).
        cache_dir: preprocessed cases (default ``run_dir/cache``); variants can share one.
        init_from: a bundle to start from instead of the variant's initialisation (a new run that
            continues from exported weights; its schedule starts again).
    """
    p = plan(data_dir, variant, epochs, iters, seed, init_from)
    trained = train(p.cfg, p.train_cases, p.val_cases, run_dir, resume=resume, init_from=p.init,
                    bundle_manifest=p.extra, log=log, cache_dir=cache_dir)
    b = bundles.load(trained)
    return finish(b.network, b.manifest.to_json(), p.val_cases, export or export_folder(run_dir, variant), log)


def export_checkpoint(data_dir: str, run_dir: str, checkpoint: str, out: str, variant: str = "2mm",
                      epochs: int = 30, iters: int = 100, seed: int = 0, log=print) -> str:
    """A bundle from one checkpoint of a run (the best so far of a run still going, or a snapshot
    at a fixed budget), validated through ``segment`` like a finished run's.

    Args:
        data_dir, variant, epochs, iters, seed: as the run was started.
        run_dir: the run folder (its id goes into the manifest).
        checkpoint: ``checkpoint_best.pt``, ``checkpoint_last.pt`` or a copy of one.
        out: where to write the bundle.
    """
    p = plan(data_dir, variant, epochs, iters, seed)
    state = load_checkpoint(checkpoint)
    net = build(p.cfg.network, **p.cfg.options)
    net.load_state_dict(state["model"])
    net.eval()
    history = json.loads(state.get("history", "[]"))
    data_used = {"train": [c.case_id for c in p.train_cases], "validation": [c.case_id for c in p.val_cases],
                 "replay": []}
    manifest = run_manifest(p.cfg, run_dir, data_used, history, float(state.get("best", -1.0)))
    manifest.update(p.extra)
    done = int(state["epoch"]) + 1
    manifest["training"]["trained"] = {"epochs": done, "iterations": done * iters, "checkpoint": os.path.basename(checkpoint)}
    return finish(net, manifest, p.val_cases, out, log)
