"""The recipe of the real-data glioma model (``braintumorseg train-recipe brats-glioma``).

Data: 32 expert-labelled BraTS 2018 and 2021 training cases (skull-stripped, co-registered, 1 mm;
labels 0/1/2/4) read from a folder outside the repository. The variants without folds hold out 5
fixed validation cases from three institution prefixes (2013, CBICA, TCIA) and train on every
other case of the folder (19 when it held only the 24 high-grade BraTS 2018 cases, as when
``brats-glioma-v1`` was trained); the fold variants (``2mm-cv*``) use the five stratified folds of
all 32 (``cross_validation.FOLDS``). Validation figures are measured through the full ``segment``
path on the original 1 mm files, and the postprocessing defaults are chosen on those same
validation cases (never on other data); for the cross-validation folds (``2mm-cv*``)
``ensemble --validate-on`` chooses them on the pooled out-of-fold cases.

The variants (settings, the models they export, what each was for) are
:mod:`.brats_glioma_variants`'s ``VARIANTS``; this module plans, trains, validates and exports them.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

from ..errors import InputError
from ..evaluation.cross_validation import FOLD_OF, FOLDS, GRADES, HGG
from ..evaluation.out_of_fold import out_of_fold_fields
from ..models import bundles, ensembles
from ..networks import SegmentationNetwork, build, network_class
from ..networks.cascade import CoarseToFine
from ..postprocess.cleanup import PostprocessOptions
from ..read.cases import Case, find_cases
from ..training import (
    Guide,
    TrainConfig,
    cache_case,
    check_cases,
    compact_checkpoint,
    is_pack,
    load_checkpoint,
    read_pack,
    run_manifest,
    train,
    write_pack,
)
from ..training.checkpoint import COMPACT, exported_checkpoint, exported_weights
from ..training.pack import TrainingCase, check_new_folder
from .brats_glioma_variants import VARIANTS, Variant
from .demo import DEMO_OPTIONS

if TYPE_CHECKING:
    pass

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
BRATS_2021_CITATION = ("Baid U et al. The RSNA-ASNR-MICCAI BraTS 2021 Benchmark on Brain Tumor Segmentation and "
                       "Radiogenomic Classification. arXiv:2107.02314, 2021")
LICENCE = ("Research use only; not a medical device and not validated for clinical use. Trained on BraTS "
           "{releases} training data released for research under the BraTS data-use terms (TCGA-derived cases: "
           "The Cancer Imaging Archive, CC BY 3.0); any use must cite the papers listed in 'citations'.")


def data_credits(case_ids: Sequence[str]) -> Dict[str, Any]:
    """The manifest's licence, citations and data source for a model trained on ``case_ids``: the
    BraTS 2021 cases bring their release's paper (the data's terms ask for it)."""
    with_2021 = any(c.startswith("BraTS2021") for c in case_ids)
    releases = "2018 and 2021" if with_2021 else "2018"
    return {"licence": LICENCE.format(releases=releases),
            "citations": CITATIONS + ([BRATS_2021_CITATION] if with_2021 else []),
            "source": f"BraTS {releases} training cases, BraTS 2021 file layout"}


DESCRIPTION = ("Residual U-Net trained on 19 real, expert-labelled BraTS 2018 glioma cases (skull-stripped, "
               "co-registered, 1 mm) on a 2-core CPU. Research use only, not for clinical use. Works on "
               "BraTS-preprocessed input (segment prepares clinical scans so first); validation figures (5 "
               "held-out BraTS cases) are in 'metrics'.")
CLINICAL_AUGMENTATION = (" Trained with clinical augmentation: sequences as if acquired in thick slices, brain "
                         "masks a little tighter.")

FOLD_DESCRIPTION = ("{kind}, cross-validation fold {fold} of the brats-glioma recipe: trained on {n} real, "
                    "expert-labelled BraTS 2018 and 2021 glioma cases of every grade on a 2-core CPU; "
                    "its held-out fold's figures ('metrics') are out of fold. Research use only, not "
                    "for clinical use.")
ALL_DESCRIPTION = ("{kind} of the brats-glioma recipe trained on all {n} real, expert-labelled BraTS 2018 and "
                   "2021 glioma cases of the cross-validation (every grade) on a 2-core CPU, as each fold model "
                   "of its design was: the pooled out-of-fold figures of those fold models describe it. "
                   "Research use only, not for clinical use.")
ALL_NOTE = ("research model trained on {n} real BraTS 2018 and 2021 cases of every grade, not a medical device and "
            "not for clinical use; it was trained on skull-stripped, co-registered BraTS data (segment strips and "
            "registers clinical scans first; check the brain mask)")
FOLD_NOTE = ("research model (one cross-validation fold) trained on real BraTS 2018 and 2021 cases of every grade, not "
             "a medical device and not for clinical use; it was trained on skull-stripped, co-registered BraTS data "
             "(segment strips and registers clinical scans first; check the brain mask)")
FOLDS_NOTE = ("research model (the fold models of a cross-validation averaged) trained on {n} real BraTS 2018 and 2021 "
              "cases of every grade, not a medical device and not for clinical use; it was trained on skull-stripped, "
              "co-registered BraTS data (segment strips and registers clinical scans first; check the brain mask)")
NOTE = ("research model trained on 19 real BraTS 2018 cases, not a medical device and not for clinical "
        "use; it was trained on skull-stripped, co-registered BraTS data (segment strips and registers "
        "clinical scans first; check the brain mask)")


ALL = "all"  # --fold all: a fold variant's design trained on every case of the folds, none held out
Fold = Union[int, str, None]  # a fold (0-4), ALL, or None for the variants with a fixed split


def member(fold: Fold) -> str:
    """How a fold variant's model of ``fold`` is named after its variant's id: ``fold3``, ``all``."""
    return ALL if fold == ALL else f"fold{fold}"


def _found(data_dir: str, spacing: Optional[float]) -> List[TrainingCase]:
    """The cases of a folder of cases, or of a pack (``--pack-to``) made at ``spacing``."""
    if not is_pack(data_dir):
        return list(check_cases(find_cases(data_dir)))
    packed = read_pack(data_dir)
    if packed.spacing != spacing:
        raise InputError(data_dir, f"is a pack of cases on {_grid(packed.spacing)}; this variant trains on "
                                   f"{_grid(spacing)}")
    return list(packed.cases)


def _grid(spacing: Optional[float]) -> str:
    return "each case's own grid" if spacing is None else f"a {spacing:g} mm grid"


def split(data_dir: str, fold: Fold = None, spacing: Optional[float] = None) -> Tuple[List[TrainingCase],
                                                                                        List[TrainingCase]]:
    """The fixed training and validation cases found in ``data_dir``: the five validation cases,
    with ``fold`` the held-out fold of the five, with ``fold="all"`` every case of the folds and
    none held out (all 32 shared cases must be there for either). ``data_dir`` may be a pack of
    the cases, cached at ``spacing``."""
    cases = _found(data_dir, spacing)
    ids = {c.case_id for c in cases}
    held_out = VALIDATION if fold is None else (() if fold == ALL else FOLDS[int(fold)])
    needed = held_out if fold is None else list(GRADES)
    missing = [v for v in needed if v not in ids]
    if missing:
        what = "validation case(s)" if fold is None else f"case(s) (all {len(GRADES)} for cross-validation)"
        raise InputError(data_dir, f"lacks the recipe's {what} {', '.join(missing[:6])}" + (" ..." if len(missing) > 6 else ""))
    if fold is not None:
        cases = [c for c in cases if c.case_id in GRADES]
    return [c for c in cases if c.case_id not in held_out], [c for c in cases if c.case_id in held_out]


def _trained_on(model: str, part: bundles.Manifest) -> set:
    if not part.training_cases:
        raise InputError(model, "is not a model of this recipe: its manifest lists no training cases")
    return part.training_cases


def ensemble_manifest(data_dir: str, models: Sequence[str], log: Callable[..., None] = print) -> Dict:
    """The manifest fields of an ensemble of this recipe's models (bundle folders): the members'
    training data, licence and citations, and its figures. Fold models of one cross-validation get
    their pooled out-of-fold figures (postprocessing off: nothing chosen on them), and the
    ensemble's own postprocessing and window, chosen on those pooled held-out cases; other members are
    validated through ``segment`` (with the first member's postprocessing, what ``segment``
    applies) on every case of ``data_dir`` that none of them trained on, per grade."""
    parts = [bundles.read_manifest(m) for m in models]
    trained = [_trained_on(m, p) for m, p in zip(models, parts)]
    train_ids = sorted(set().union(*trained))
    validation: Union[str, List[str]]
    own: Dict = {"note": NOTE}
    found = out_of_fold_fields(data_dir, models, parts, log)
    if found is not None:
        own = {"note": FOLDS_NOTE.format(n=len(train_ids)), **found}
        metrics = own.pop("metrics")
        validation = "out of fold (each member's held-out fold)"
    else:
        held_out = [c for c in check_cases(find_cases(data_dir)) if c.case_id not in train_ids]
        if not held_out:
            raise InputError(data_dir, "holds no case that none of the members trained on")
        try:
            post = PostprocessOptions(**parts[0].postprocessing)
        except TypeError:
            raise InputError(models[0], f"has postprocessing settings this version does not know: "
                                        f"{parts[0].postprocessing}") from None
        from ..evaluation.real_validation import validate_bundle

        report, _ = validate_bundle(list(models), held_out, log=log, postprocessing=post)
        metrics, validation = {"validation_segment": report}, [c.case_id for c in held_out]
    credits = data_credits(train_ids)
    return {"metrics": metrics, **own, "licence": credits["licence"], "citations": credits["citations"],
            "demo": False, "clinical_use": False,
            "training_data": {"source": credits["source"], "train": train_ids, "validation": validation}}


@dataclass
class Plan:
    """Everything a variant's run is made of: settings, fixed split, the manifest's own fields."""
    cfg: TrainConfig
    train_cases: List[TrainingCase]
    val_cases: List[TrainingCase]
    init: Optional[bundles.Bundle]
    extra: Dict
    fold: Fold = None
    guide: Optional[Guide] = None   # a cascade's training inputs beside the sequences


def _settings(variant: str) -> Variant:
    if variant not in VARIANTS:
        raise InputError(None, f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    return VARIANTS[variant]


def _variant(variant: str, fold: Fold) -> Variant:
    """The variant's settings, checked against ``fold`` (fold variants need one or ``all``, the
    others take none)."""
    v = _settings(variant)
    if v.folds and fold is None:
        raise InputError(None, f"variant {variant} trains one cross-validation fold: give --fold 0-{len(FOLDS) - 1} "
                               f"(or --fold {ALL}: every case)")
    if not v.folds and fold is not None:
        folded = ", ".join(k for k, w in VARIANTS.items() if w.folds)
        raise InputError(None, f"variant {variant} has a fixed split; --fold is for {folded}")
    if fold is not None and fold != ALL and not (isinstance(fold, int) and 0 <= fold < len(FOLDS)):
        raise InputError(None, f"--fold {fold} is out of range: choose 0-{len(FOLDS) - 1} or {ALL}")
    return v


def model_id(variant: str, fold: Fold = None) -> str:
    """The id a run of ``variant`` (and ``fold``) exports under."""
    v = _variant(variant, fold)
    return v.model_id if fold is None else f"{v.model_id}-{member(fold)}"


def export_folder(run_dir: str, variant: str, fold: Fold = None) -> str:
    """Where a run of ``variant`` writes its bundle by default: ``run_dir/<its model id>``."""
    return os.path.join(run_dir, model_id(variant, fold))


def plan(data_dir: str, variant: str, epochs: int, iters: int, seed: int, init_from: Optional[str] = None,
         fold: Fold = None) -> Plan:
    """The run of ``variant`` (on ``fold``'s training cases for a fold variant); ``init_from`` (a
    bundle) replaces the variant's initial weights, e.g. to continue from the last exported model
    when a run folder was lost."""
    v = _variant(variant, fold)
    train_cases, val_cases = split(data_dir, fold, v.spacing)
    rare = [c.case_id for c in train_cases if GRADES.get(c.case_id, HGG) != HGG]  # low-grade, no or little ET
    cfg = TrainConfig(network=v.network, options=v.options or DEMO_OPTIONS, epochs=epochs, iters_per_epoch=iters, batch=2,
                      patch=v.patch, seed=seed, val_every=2, spacing=v.spacing, lr=v.lr,
                      clinical_augmentation=v.clinical_augmentation, select_best=not v.folds,
                      fg_fraction=v.fg_fraction, region_weights=v.region_weights, hardest_voxels=v.hardest_voxels,
                      batch_dice=v.batch_dice, missed_weight=v.missed_weight,
                      augmentation=v.augmentation,
                      without_enhancement=v.without_enhancement, fluid_cores=v.fluid_cores,
                      fluid_without_enhancement=v.fluid_without_enhancement, solid_cores=v.solid_cores,
                      carved_tumors=v.carved_tumors,
                      carve_from=tuple(rare) if v.carved_tumors else (),
                      schedule=v.schedule,
                      average_from=v.average_from,
                      case_weights={c: v.rare_weight for c in rare if v.rare_weight != 1.0})
    recipe = (f"braintumorseg train-recipe brats-glioma --data DATA --out RUNDIR --variant {variant} "
              + (f"--fold {fold} " if fold is not None else "")
              + f"--epochs {epochs} --iters {iters} --seed {seed}" + (f" --init-from {init_from}" if init_from else ""))
    start = init_from or (v.init_from.format(member=member(fold)) if v.init_from else None)
    init = bundles.load(start) if start else None
    guide = None
    if v.coarse_from:
        cascade = CoarseToFine(**cfg.options)
        stage1 = bundles.load(v.coarse_from.format(member=member(fold)))
        if init is None:  # a new cascade: both stages start from this fold's 2 mm model
            cascade.start_from(stage1.network)
            init = bundles.Bundle(stage1.path, stage1.manifest, cascade)
        else:
            _check_stage1(init, stage1)
        guide = _out_of_fold_guide(cascade, v.coarse_from)
    description = DESCRIPTION + (CLINICAL_AUGMENTATION if v.clinical_augmentation else "")
    credits = data_credits([c.case_id for c in train_cases])
    extra = {"id": model_id(variant, fold), "demo": False, "clinical_use": False, "description": description,
             "note": NOTE, "recipe": recipe, "variant": variant, "patch_size": list(v.window),
             "licence": credits["licence"], "citations": credits["citations"],
             "training_data": {"source": credits["source"],
                               "train": [c.case_id for c in train_cases],
                               "validation": [c.case_id for c in val_cases]}}
    grades = {c.case_id: GRADES[c.case_id] for c in train_cases + val_cases}
    if fold == ALL:
        extra["description"] = ALL_DESCRIPTION.format(kind=v.kind, n=len(train_cases))
        extra["note"] = ALL_NOTE.format(n=len(train_cases))
        # not "cross_validation": it holds no fold out, so no figures of its own
        extra["all_folds"] = {"folds": [list(f) for f in FOLDS], "grades": grades,
                              "design_folds": [model_id(variant, k) for k in range(len(FOLDS))],
                              "exported": f"{_exported(cfg)} (no case held out)"}
    elif fold is not None:
        extra["description"] = FOLD_DESCRIPTION.format(kind=v.kind, fold=fold, n=len(train_cases))
        extra["note"] = FOLD_NOTE
        extra["cross_validation"] = {"fold": fold, "folds": [list(f) for f in FOLDS], "grades": grades,
                                     "exported": f"{_exported(cfg)} (the held-out fold chooses nothing)"}
    if init is not None:
        extra["initialised_from"] = {"id": init.id, "weights_sha256": init.manifest.weights_sha256}
    return Plan(cfg, train_cases, val_cases, init, extra, fold, guide)


def _exported(cfg: TrainConfig) -> str:
    """Which weights a fold variant's run exports, in words for its manifest."""
    if cfg.average_from is None:
        return "last epoch"
    return f"the weights at the ends of epochs {cfg.average_from}-{cfg.epochs} averaged"


def _check_stage1(init: bundles.Bundle, stage1: bundles.Bundle) -> None:
    """Refuses to train on a cascade whose stage 1 is not ``stage1``, the fold model that makes
    the guides of the variant's own fold: stage 1 stays frozen, and stage 2 learns to correct the
    errors of the network that guides it (compared as fp16 stores them, so a converted copy passes)."""
    if not isinstance(init.network, CoarseToFine):
        raise InputError(init.path, f"is a {init.manifest.network} model, not a cascade: this variant trains "
                                    f"a cascade on, or starts a new one from {stage1.id}")
    ours = bundles.half_precision(init.network.coarse.state_dict())
    theirs = bundles.half_precision(stage1.network.state_dict())
    if ours.keys() != theirs.keys() or not all(torch.equal(ours[k], theirs[k]) for k in theirs):
        raise InputError(init.path, f"is a cascade whose stage 1 is not {stage1.id}, the model that makes this "
                                    f"variant's guides: start from a cascade built on it")


def _out_of_fold_guide(cascade: CoarseToFine, coarse_from: str) -> Guide:
    """Each training case's guide channels by the 2 mm fold model that held that case out: as
    nnU-Net trains its cascade's second stage on the first stage's out-of-fold predictions, so that
    it learns to correct the errors stage 1 makes on cases it has not seen."""
    nets: Dict[int, SegmentationNetwork] = {}

    def channels(case_id: str, volume: torch.Tensor) -> torch.Tensor:
        k = FOLD_OF[case_id]
        if k not in nets:
            nets[k] = bundles.load(coarse_from.format(member=member(k))).network
        return cascade.guide(volume, nets[k])

    digests = ",".join(bundles.read_manifest(bundles.resolve(coarse_from.format(member=member(k)))).weights_sha256[:12]
                       for k in range(len(FOLDS)))
    return Guide.made("out-of-fold", cascade, digests, channels)


def finish(net: SegmentationNetwork, manifest: Dict, val_cases: Sequence[Case], out: str, log: Callable[..., None] = print,
           postprocessing: Optional[PostprocessOptions] = None, data_dir: Optional[str] = None,
           design: Optional[Dict] = None) -> str:
    """Validate the network through ``segment``, store the chosen postprocessing (or
    ``postprocessing``, chosen elsewhere) and the figures in its manifest, and write the final
    bundle to ``out`` (replacing an earlier one). A model that held no case out (``--fold all``)
    takes its design's figures, postprocessing and window: ``design`` when given
    (:func:`design_fields_from`), else from the fold models of that design when they are installed
    (``data_dir`` for their held-out cases), else none and no postprocessing."""
    from ..evaluation.real_validation import validate_bundle

    manifest = {k: v for k, v in manifest.items() if k != "weights_sha256"}
    if val_cases:
        parent = os.path.dirname(os.path.abspath(out))
        with tempfile.TemporaryDirectory(prefix=".staging-", dir=parent) as tmp:
            staged = bundles.save(net, os.path.join(tmp, "bundle"), manifest)
            report, post = validate_bundle(staged, val_cases, log=log, postprocessing=postprocessing)
        manifest["postprocessing"] = asdict(post)
        manifest.setdefault("metrics", {})["validation_segment"] = report
    else:
        manifest.update(design if design is not None else _design_fields(manifest, data_dir, log))
    if os.path.exists(out):
        shutil.rmtree(out)
    return bundles.save(net, out, manifest)


def validate_fold_model(net: SegmentationNetwork, manifest: Dict, data_dir: str, out: str,
                        log: Callable[..., None] = print) -> str:
    """A fold model made outside a training run (e.g. a weight average) validated on its held-out
    fold through ``segment`` as a trained fold model is (postprocessing off), and written to ``out``."""
    cv = manifest.get("cross_validation")
    if not (isinstance(cv, dict) and isinstance(cv.get("fold"), int)):
        raise InputError(str(manifest.get("id")), "is not a cross-validation fold model: it holds no fold out to "
                                                  "validate on")
    if is_pack(data_dir):
        raise InputError(data_dir, "is a pack: validating segments the raw cases")
    _, held_out = split(data_dir, cv["fold"])
    return finish(net, manifest, _raw(held_out), out, log, PostprocessOptions())


def _design_fields(manifest: Dict, data_dir: Optional[str], log) -> Dict:
    """The out-of-fold fields of a model trained on every case, from its design's fold models."""
    design = manifest.get("all_folds", {}).get("design_folds", [])
    try:
        paths = [bundles.resolve(m) for m in design]
    except InputError:
        paths = []
    found = out_of_fold_fields(data_dir, paths, [bundles.read_manifest(p) for p in paths], log) \
        if paths and data_dir else None
    if found is None:
        log(f"no out-of-fold figures: the fold models {', '.join(design) or '(none)'} are not all installed")
        return {"postprocessing": asdict(PostprocessOptions()), "metrics": {}}
    return found


def design_fields_from(ensemble: str, design_folds: Sequence[str]) -> Dict:
    """The out-of-fold fields of a model trained on every case, taken from an ensemble that
    ``ensemble --validate-on`` made of exactly its design's fold models (the same weights, by
    sha256) with today's protocol: the figures, postprocessing and window that segmenting the
    pooled held-out cases again would give, without doing it twice."""
    from ..evaluation.real_validation import ALL_FOUR, MISSING_CONDITIONS

    doc = ensembles.describe(bundles.resolve(ensemble))  # refuses members of other weights than it was made of
    names = [e["name"] for e in doc.get("members", [])]
    if names != list(design_folds):
        raise InputError(ensemble, f"is not an ensemble of this design's folds ({', '.join(design_folds)}): "
                                   f"its members are {', '.join(names) or 'none'}")
    chosen = doc.get("metrics", {}).get("out_of_fold_postprocessed", {})
    conditions = chosen.get("postprocessing_search", {}).get("conditions")
    if conditions != [ALL_FOUR, *MISSING_CONDITIONS]:
        raise InputError(ensemble, "has no postprocessing chosen on its pooled held-out cases with all four "
                                   "sequences, without T1 and without T2 (made without --validate-on, or by an "
                                   "earlier version): make it again with ensemble --validate-on")
    return {"metrics": {k: doc["metrics"][k] for k in ("out_of_fold", "out_of_fold_postprocessed")},
            "postprocessing": doc["postprocessing"], "window": doc["window"], "design_figures_from": doc["id"]}


def averaged_design_fields(doc: Dict, others: Sequence[bundles.Manifest], ensemble: str) -> Dict:
    """For a weight average (``averaging.averaged_manifest``) of models trained on every case: its
    design's figures from ``ensemble``, which ``ensemble --validate-on`` made of the same averages of
    their design's fold models, fold by fold (checked by the ids each member's manifest records)."""
    averaged = doc["averaged"]
    designs = [d.get("all_folds", {}).get("design_folds") for d in (doc, *(o.document for o in others))]
    if not all(isinstance(d, list) and len(d) == len(FOLDS) for d in designs):
        raise InputError(ensemble, "--figures-from is for models trained on every case (--fold all), each naming "
                                   "its design's fold models")
    names = [e["name"] for e in ensembles.describe(bundles.resolve(ensemble)).get("members", [])]
    if len(names) != len(FOLDS):
        raise InputError(ensemble, f"has {len(names)} members, not one model for each of the {len(FOLDS)} folds")
    for k, name in enumerate(names):
        member = bundles.read_manifest(ensembles.member_folder(name, bundles.resolve(ensemble))).document
        made = member.get("averaged") or {}
        expected = (designs[0][k], averaged["part"], [d[k] for d in designs[1:]])
        if ((made.get("base") or {}).get("id"), made.get("part"), [w.get("id") for w in made.get("with", [])]) != expected:
            raise InputError(ensemble, f"member {name} is not the average of {', '.join([expected[0], *expected[2]])}"
                                       + (f" ({expected[1]})" if expected[1] else ""))
    return dict(design_fields_from(ensemble, names), all_folds=dict(doc["all_folds"], design_folds=names))


def _design_from(figures_from: Optional[str], p: Plan) -> Optional[Dict]:
    if not figures_from:
        return None
    if p.fold != ALL:
        raise InputError(None, "--figures-from is for --fold all: a fold model is scored on its own held-out fold")
    return design_fields_from(figures_from, p.extra["all_folds"]["design_folds"])


def train_real(data_dir: str, run_dir: str, variant: str = "2mm", epochs: int = 30, iters: int = 100,
               seed: int = 0, resume: bool = True, export: Optional[str] = None, cache_dir: Optional[str] = None,
               init_from: Optional[str] = None, fold: Fold = None, workers: int = 0, amp: bool = False,
               figures_from: Optional[str] = None, log: Callable[..., None] = print) -> str:
    """Train (or resume) one variant, validate it through ``segment`` and export the bundle. From a
    pack (no raw cases to validate on) it returns the weights it would export as a compact checkpoint
    instead, to be validated and exported with :func:`export_checkpoint` where the cases are.

    Args:
        data_dir: folder holding the 32 real cases (``../shared/real-cases``), or a pack of them.
        run_dir: run folder: config, cache, checkpoints, log, the trained bundle.
        variant: a key of ``VARIANTS``.
        epochs, iters: training length (epochs of ``iters`` iterations of batch 2).
        seed: the run's seed.
        resume: continue from the run folder's last checkpoint when there is one.
        export: where to write the final bundle (default ``run_dir/<the variant's model id>``).
        cache_dir: preprocessed cases (default ``run_dir/cache``); variants can share one.
        init_from: a bundle to start from instead of the variant's initialisation (a new run that
            continues from exported weights; its schedule starts again).
        fold: the cross-validation fold (0-4) a fold variant holds out, or ``"all"`` to train its
            design on every case of the folds (nnU-Net's ``all``), holding none out.
        workers: processes preparing patches beside the training one (0: none).
        amp: mixed precision (``TrainConfig.amp``).
        figures_from: with ``fold="all"``: an ensemble of the design's fold models, made by
            ``ensemble --validate-on``, to take the out-of-fold figures, postprocessing and window
            from (:func:`design_fields_from`; checked before training) instead of segmenting the
            pooled held-out cases again.
    """
    if export and is_pack(data_dir):
        raise InputError(data_dir, "is a pack: a run from it exports no bundle (--export), only its weights")
    p = plan(data_dir, variant, epochs, iters, seed, init_from, fold)
    design = _design_from(figures_from, p)
    if export:  # its folder made now: a run must not end, after hours, on a folder that is not there
        os.makedirs(os.path.dirname(os.path.abspath(export)), exist_ok=True)
    p.cfg.workers, p.cfg.amp = workers, amp
    trained = train(p.cfg, p.train_cases, p.val_cases, run_dir, resume=resume, init_from=p.init,
                    bundle_manifest=p.extra, log=log, cache_dir=cache_dir, guide=p.guide)
    if is_pack(data_dir):
        # no raw cases here to segment: the weights a run from the cases would export travel back
        # small (a fold's last epoch or average, another variant's best), to be validated there
        out = compact_checkpoint(exported_checkpoint(p.cfg, run_dir), os.path.join(run_dir, COMPACT), {"amp": amp})
        log(f"validate and export it where the raw cases are: train-recipe brats-glioma --data CASES --out {run_dir} "
            f"--variant {variant}" + (f" --fold {fold}" if fold is not None else "")
            + f" --epochs {epochs} --iters {iters} --seed {seed} --from-checkpoint {out}")
        return out
    b = bundles.load(trained)
    return finish(b.network, b.manifest.to_json(), _raw(p.val_cases), export or export_folder(run_dir, variant, fold),
                  log, _fold_postprocessing(p), data_dir, design)


def pack(data_dir: str, variant: str, out: str, cache_dir: Optional[str] = None, log: Callable[..., None] = print) -> str:
    """Cache every case of the cross-validation on ``variant``'s grid and write them as a pack.

    Args:
        data_dir: the folder of the 32 shared cases.
        variant: any variant training on that grid from the sequences alone (no cascade).
        out: the pack's folder (new).
        cache_dir: preprocessed cases to reuse or fill (default: a temporary folder).
    """
    v = _settings(variant)
    if v.coarse_from or network_class(v.network).guide_channels:
        raise InputError(None, f"variant {variant} trains on guide channels its first stage makes; a pack holds "
                               "the sequences alone")
    if is_pack(data_dir):
        raise InputError(data_dir, "is a pack already")
    check_new_folder(out)  # before minutes of caching
    cases, _ = split(data_dir, ALL)
    with tempfile.TemporaryDirectory(prefix="btseg-cache-") as tmp:
        files = {c.case_id: cache_case(c, cache_dir or tmp, v.spacing) for c in cases if isinstance(c, Case)}
        log(f"packing {len(files)} cases cached on {_grid(v.spacing)} into {out}")
        return write_pack(files, out, v.spacing, {"recipe": "brats-glioma", "made_for_variant": variant,
                                                  "made_by": f"braintumorseg train-recipe brats-glioma --data DATA "
                                                             f"--variant {variant} --pack-to OUT"})


def _raw(cases: Sequence[TrainingCase]) -> List[Case]:
    """Cases to segment: never a pack's (callers refuse a pack before)."""
    raw = [c for c in cases if isinstance(c, Case)]
    assert len(raw) == len(cases), "a pack's cases cannot be segmented"
    return raw


def _fold_postprocessing(p: Plan) -> Optional[PostprocessOptions]:
    """A fold's model is validated without postprocessing (none is chosen on its held-out fold:
    the setting is chosen later on the pooled out-of-fold labels); other variants search it."""
    return PostprocessOptions() if p.fold is not None else None


def export_checkpoint(data_dir: str, run_dir: str, checkpoint: str, out: str, variant: str = "2mm",
                      epochs: int = 30, iters: int = 100, seed: int = 0, fold: Fold = None,
                      figures_from: Optional[str] = None, log: Callable[..., None] = print) -> str:
    """A bundle from one checkpoint of a run (the best so far of a run still going, or a snapshot
    at a fixed budget), validated through ``segment`` like a finished run's.

    Args:
        data_dir, variant, epochs, iters, seed, fold: as the run was started.
        run_dir: the run folder (its id goes into the manifest).
        checkpoint: ``checkpoint_best.pt``, ``checkpoint_last.pt``, a copy of one, or the compact
            checkpoint a run from a pack ends with (``checkpoint_fp16.pt``).
        out: where to write the bundle.
        figures_from: as for :func:`train_real`.
    """
    if is_pack(data_dir):
        raise InputError(data_dir, "is a pack: a checkpoint is validated through segment on the raw cases "
                                   "(--data their folder)")
    p = plan(data_dir, variant, epochs, iters, seed, fold=fold)
    design = _design_from(figures_from, p)
    state = load_checkpoint(checkpoint)
    p.cfg.amp = bool(state.get("settings", {}).get("amp", False))  # a compact checkpoint keeps how it was trained
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)  # a run folder that lives elsewhere
    net = build(p.cfg.network, **p.cfg.options)
    net.load_state_dict(exported_weights(state))  # a run averaging its weights: their average so far
    net.eval()
    history = json.loads(state.get("history", "[]"))
    data_used = {"train": [c.case_id for c in p.train_cases], "validation": [c.case_id for c in p.val_cases],
                 "replay": []}
    manifest = run_manifest(p.cfg, run_dir, data_used, history, float(state.get("best", -1.0)))
    manifest.update(p.extra)
    done = int(state["epoch"]) + 1
    manifest["training"]["trained"] = {"epochs": done, "iterations": done * iters, "checkpoint": os.path.basename(checkpoint)}
    return finish(net, manifest, _raw(p.val_cases), out, log, _fold_postprocessing(p), data_dir, design)
