"""The real-data recipe's machinery (split, manifest, validation through segment, checkpoint
export, resume) on small synthetic stand-ins named like the real cases: the real cases stay out
of the default test run."""
import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import cli_main, one_line_error, save_tiny_bundle

from BrainTumorSegLib.errors import InputError
from BrainTumorSegLib.evaluation.cross_validation import FOLDS, GRADES, NO_ET
from BrainTumorSegLib.evaluation.out_of_fold import WINDOW_TOLERANCE
from BrainTumorSegLib.models import bundles, ensembles
from BrainTumorSegLib.recipes.brats_glioma import (
    CITATIONS,
    VALIDATION,
    data_credits,
    ensemble_manifest,
    export_checkpoint,
    plan,
    split,
    train_real,
)
from BrainTumorSegLib.recipes.brats_glioma_variants import MODEL_ID
from BrainTumorSegLib.training import load_checkpoint, read_pack

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_case(root, case_id: str, seed: int, enhancing: bool = True) -> None:
    """A 48^3 1 mm 'brain' ball with a tumor (edema around a core with an enhancing rim, or a
    non-enhancing core only)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:48, :48, :48]
    brain = (z - 24) ** 2 + (y - 24) ** 2 + (x - 24) ** 2 < 20 ** 2
    c = rng.integers(18, 30, 3)
    r = np.sqrt((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2)
    seg = np.zeros(brain.shape, np.uint8)
    seg[(r < 9) & brain] = 2
    seg[r < 5] = 4 if enhancing else 1
    seg[r < 3] = 1
    folder = os.path.join(root, case_id)
    os.makedirs(folder)
    contrast = {"t1": (1.0, 0.6, 0.8, 0.4), "t1ce": (1.0, 0.5, 1.0, 1.8), "t2": (1.0, 1.6, 1.8, 1.4),
                "flair": (1.0, 1.2, 1.9, 1.3)}
    for role, (base, ncr, ed, et) in contrast.items():
        img = np.where(brain, base, 0.0) * 100
        for label, k in ((1, ncr), (2, ed), (4, et)):
            img[seg == label] = 100 * k
        img = np.where(brain, img + rng.normal(0, 3, img.shape), 0).astype(np.float32)
        sitk.WriteImage(sitk.GetImageFromArray(img), os.path.join(folder, f"{case_id}_{role}.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(seg), os.path.join(folder, f"{case_id}_seg.nii.gz"))


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    root = tmp_path_factory.mktemp("realish")
    for i, cid in enumerate(list(VALIDATION) + ["Brats18_CBICA_ABM_1", "Brats18_TCIA02_135_1"]):
        write_case(str(root), cid, i)
    return str(root)


def test_split_is_fixed_and_refuses_data_without_the_validation_cases(standins, tmp_path):
    train, val = split(standins)
    assert [c.case_id for c in val] == sorted(VALIDATION) and len(train) == 2
    assert not {c.case_id for c in train} & set(VALIDATION)
    assert len({v.split("_")[1] for v in VALIDATION}) >= 3  # three institution prefixes
    write_case(str(tmp_path), "Brats18_CBICA_ABM_1", 0)
    with pytest.raises(InputError, match="lacks the recipe's validation case"):
        split(str(tmp_path))


def test_recipe_trains_validates_through_segment_exports_and_resumes(standins, tmp_path):
    run = tmp_path / "run"
    out = train_real(standins, str(run), variant="2mm", epochs=1, iters=2, cache_dir=str(tmp_path / "cache"),
                     log=lambda *a: None)
    assert out == str(run / MODEL_ID)
    m = bundles.read_manifest(out).to_json()
    assert m["id"] == MODEL_ID and not m["demo"] and m["clinical_use"] is False
    assert m["preprocessing"]["spacing_mm"] == 2.0 and m["patch_size"] == [64, 64, 64]
    assert m["training_data"]["validation"] == sorted(VALIDATION)
    assert set(m["training_data"]["train"]) == {"Brats18_CBICA_ABM_1", "Brats18_TCIA02_135_1"}
    assert m["citations"] == CITATIONS and "not a medical device" in m["licence"] and m["note"]
    v = m["metrics"]["validation_segment"]
    assert sorted(v["per_case"]) == sorted(VALIDATION)
    for key in ("dice_WT", "dice_TC", "dice_ET", "hd95_WT", "hd95_TC", "hd95_ET", "seconds"):
        assert np.isfinite(v["mean"][key])
    # the stored postprocessing is the grid point with the best mean Dice on the validation cases
    best = max(v["postprocessing_search"]["mean_dice"], key=lambda pd: pd[1])
    assert {k: m["postprocessing"][k] for k in best[0]} == best[0]
    assert json.load(open(run / "config.json"))["config"]["spacing"] == 2.0
    # a finished run resumed: nothing more to train, the same weights exported again
    again = train_real(standins, str(run), variant="2mm", epochs=1, iters=2, cache_dir=str(tmp_path / "cache"),
                       log=lambda *a: None)
    assert bundles.read_manifest(again).weights_sha256 == m["weights_sha256"]
    # any checkpoint of the run becomes a validated bundle that says what it is
    snap = export_checkpoint(standins, str(run), str(run / "checkpoint_last.pt"), str(tmp_path / "snap"),
                             epochs=1, iters=2, log=lambda *a: None)
    sm = bundles.read_manifest(snap).to_json()
    assert sm["training"]["trained"] == {"epochs": 1, "iterations": 2, "checkpoint": "checkpoint_last.pt"}
    assert "validation_segment" in sm["metrics"] and bundles.load(snap).network is not None
    # an ensemble of models that are not folds is validated on every case none of them trained on
    doc = ensemble_manifest(standins, [out, snap], log=lambda *a: None)
    assert sorted(doc["training_data"]["validation"]) == sorted(VALIDATION)
    assert sorted(doc["metrics"]["validation_segment"]["per_case"]) == sorted(VALIDATION)
    assert doc["metrics"]["validation_segment"]["by_grade"]["HGG"]["cases"] == len(VALIDATION)


@pytest.fixture(scope="module")
def all_standins(tmp_path_factory):
    """Stand-ins for all 32 shared cases (those without enhancing tumor have none)."""
    root = tmp_path_factory.mktemp("realish32")
    for i, cid in enumerate(GRADES):
        write_case(str(root), cid, i, enhancing=GRADES[cid] != NO_ET)
    return str(root)


def test_fold_split_holds_out_one_fold_and_needs_every_case(all_standins, standins):
    for k, held_out in enumerate(FOLDS):
        train, val = split(all_standins, fold=k)
        assert sorted(c.case_id for c in val) == sorted(held_out)
        assert len(train) == len(GRADES) - len(held_out) and not {c.case_id for c in train} & set(held_out)
    with pytest.raises(InputError, match="all 32 for cross-validation"):
        split(standins, fold=0)


@pytest.mark.parametrize("variant, fold, message", [("2mm-cv", None, "give --fold"), ("2mm-cv", 5, "out of range"),
                                                    ("2mm", 0, "has a fixed split")])
def test_fold_and_variant_must_agree(all_standins, tmp_path, variant, fold, message):
    with pytest.raises(InputError, match=message):
        train_real(all_standins, str(tmp_path / "run"), variant=variant, fold=fold, epochs=1, iters=1)
    assert not (tmp_path / "run").exists()


def test_a_longer_fold_continues_from_its_own_fold_and_draws_rare_tumors_more_often(all_standins, tmp_path,
                                                                                  monkeypatch):
    # the folds they start from, as a user who trained them registers them (they are not shipped)
    for k in range(len(FOLDS)):
        for version in ("v2", "v4", "v5", "v6"):
            save_tiny_bundle(np.random.default_rng(k).random((4, 32, 32, 32), np.float32),
                             tmp_path / f"brats-glioma-{version}-fold{k}", model_id=f"brats-glioma-{version}-fold{k}")
    monkeypatch.setenv("BRAINTUMORSEG_MODELS", str(tmp_path))
    for variant, start, made, weight in (("2mm-cv-long", "v2", "v4", 2.0), ("2mm-cv-longer", "v4", "v5", 3.0),
                                         ("2mm-cv-tc", "v5", "v6", 3.0), ("2mm-cv-nnaug", "v5", "v7", 3.0)):
        for k in (0, 2):
            p = plan(all_standins, variant, 1, 1, 0, fold=k)
            assert p.cfg.region_weights == ((1.0, 2.0, 1.0) if variant == "2mm-cv-tc" else None)
            assert p.cfg.augmentation == ("nnunet" if variant == "2mm-cv-nnaug" else "standard")
            assert p.extra["initialised_from"]["id"] == f"brats-glioma-{start}-fold{k}"  # never a model that saw fold k
            assert p.extra["id"] == f"brats-glioma-{made}-fold{k}" and p.cfg.fg_fraction == 0.5
            rare = {c.case_id for c in p.train_cases if GRADES[c.case_id] != "HGG"}
            assert set(p.cfg.case_weights) == rare and len(rare) >= 5 and set(p.cfg.case_weights.values()) == {weight}
            assert not rare & set(FOLDS[k])
    assert plan(all_standins, "2mm-cv", 1, 1, 0, fold=0).cfg.case_weights == {}
    scratch = plan(all_standins, "2mm-cv-tc-nnaug", 1, 1, 0, fold=3)  # both changes from the first iteration
    # its training cases hold BraTS 2021 ones: the manifest it will write cites that release
    assert scratch.extra["citations"] == data_credits([c.case_id for c in scratch.train_cases])["citations"]
    assert "arXiv:2107.02314" in scratch.extra["citations"][-1] and "2018 and 2021" in scratch.extra["licence"]
    assert "initialised_from" not in scratch.extra and scratch.extra["id"] == "brats-glioma-v8-fold3"
    assert scratch.cfg.region_weights == (1.0, 2.0, 1.0) and scratch.cfg.augmentation == "nnunet"
    assert set(scratch.cfg.case_weights.values()) == {3.0} and scratch.cfg.fg_fraction == 0.5
    long = plan(all_standins, "2mm-cv-tc-noenh-scratch", 1, 1, 0, fold=2)  # v9's settings, from scratch
    assert "initialised_from" not in long.extra and long.extra["id"] == "brats-glioma-v16-fold2"
    assert long.cfg.lr is None and scratch.cfg.lr is None  # the network's own (1e-3), as v8 from scratch
    assert (long.cfg.without_enhancement, long.cfg.region_weights, long.cfg.fg_fraction) == (0.2, (1.0, 2.0, 1.0), 0.5)
    assert set(long.cfg.case_weights.values()) == {3.0}
    noenh = plan(all_standins, "2mm-cv-tc-noenh", 1, 1, 0, fold=1)  # the v6 fold trained on
    assert noenh.extra["initialised_from"]["id"] == "brats-glioma-v6-fold1" and noenh.extra["id"] == "brats-glioma-v9-fold1"
    assert noenh.cfg.without_enhancement == 0.2 and noenh.cfg.region_weights == (1.0, 2.0, 1.0)
    assert set(noenh.cfg.case_weights.values()) == {3.0} and scratch.cfg.without_enhancement == 0.0
    noenh2 = plan(all_standins, "2mm-cv-tc-noenh2", 1, 1, 0, fold=4)  # the shipped v9 fold trained on
    assert noenh2.extra["initialised_from"]["id"] == "brats-glioma-v9-fold4" and noenh2.extra["id"] == "brats-glioma-v10-fold4"
    assert noenh2.cfg.without_enhancement == 0.4 and noenh2.cfg.region_weights == (1.0, 3.0, 1.0)
    fluid = plan(all_standins, "2mm-cv-tc-noenh-fluid", 1, 1, 0, fold=2)  # v9 trained on, with cystic cores
    assert fluid.extra["initialised_from"]["id"] == "brats-glioma-v9-fold2" and fluid.extra["id"] == "brats-glioma-v11-fold2"
    assert fluid.cfg.fluid_cores == 0.25 and fluid.cfg.without_enhancement == 0.2 and noenh2.cfg.fluid_cores == 0.0
    walls = plan(all_standins, "2mm-cv-tc-noenh-fluid2", 1, 1, 0, fold=0)
    assert walls.extra["initialised_from"]["id"] == "brats-glioma-v9-fold0" and walls.extra["id"] == "brats-glioma-v12-fold0"
    assert walls.cfg.fluid_without_enhancement == 0.5 and fluid.cfg.fluid_without_enhancement == 0.0
    topk = plan(all_standins, "2mm-cv-tc-noenh-fluid2-topk", 1, 1, 0, fold=3)  # v12's settings, the TopK BCE
    assert topk.extra["initialised_from"]["id"] == "brats-glioma-v9-fold3" and topk.extra["id"] == "brats-glioma-v18-fold3"
    assert topk.cfg.hardest_voxels == 0.1 and walls.cfg.hardest_voxels is None
    assert topk.cfg.fluid_without_enhancement == 0.5 and topk.cfg.region_weights == (1.0, 2.0, 1.0)
    swa = plan(all_standins, "2mm-cv-tc-noenh-swa", 4, 100, 0, fold=3)  # v9 trained on, its epoch ends averaged
    assert swa.extra["initialised_from"]["id"] == "brats-glioma-v9-fold3" and swa.extra["id"] == "brats-glioma-v13-fold3"
    assert (swa.cfg.schedule, swa.cfg.average_from, swa.cfg.lr, swa.cfg.select_best) == ("constant", 1, 1e-4, False)
    assert swa.cfg.without_enhancement == 0.2 and swa.cfg.region_weights == (1.0, 2.0, 1.0)
    assert swa.extra["cross_validation"]["exported"].startswith("the weights at the ends of epochs 1-4 averaged")
    assert walls.extra["cross_validation"]["exported"].startswith("last epoch")
    solid = plan(all_standins, "2mm-cv-tc-noenh-solid", 1, 1, 0, fold=1)  # v9 trained on, with solid cores
    assert solid.extra["initialised_from"]["id"] == "brats-glioma-v9-fold1" and solid.extra["id"] == "brats-glioma-v14-fold1"
    assert solid.cfg.solid_cores == 0.25 and solid.cfg.without_enhancement == 0.2 and swa.cfg.solid_cores == 0.0
    et = plan(all_standins, "1mm-cascade-et-cv", 1, 1, 0, fold=2)  # the cascade, refining the enhancing tumor only
    assert et.extra["id"] == "brats-glioma-cascade-et-v2-fold2" and et.cfg.network == "coarse_to_fine"
    assert et.cfg.options["refine"] == "et" and et.extra["initialised_from"]["id"] == "brats-glioma-v9-fold2"


def test_the_et_cascade_on_averaged_fold_models_refines_and_is_guided_by_the_averages(all_standins, tmp_path,
                                                                                     monkeypatch):
    """``1mm-cascade-et-soup-cv``: stage 1 is the fold's v9 + v12 average (made with ``average``,
    found by name), and every training case's guide comes from the average that held it out;
    ``2mm-cv-soup-long`` (and ``-whole``, on whole 2 mm brains) trains on from the same averages, and
    ``1mm-cascade-et-soup-long`` (then ``-longer``, ``-longer2``) trains the fold's cascade on, guided
    by them still."""
    for k in range(len(FOLDS)):  # v12 is not shipped: each shipped v9 fold averaged with itself stands in
        assert cli_main("average", f"brats-glioma-v9-fold{k}", f"brats-glioma-v9-fold{k}", "--out",
                        str(tmp_path / f"brats-glioma-soup-v9-v12-fold{k}")).returncode == 0
    monkeypatch.setenv("BRAINTUMORSEG_MODELS", str(tmp_path))
    p = plan(all_standins, "1mm-cascade-et-soup-cv", 4, 100, 0, fold=2)
    assert p.extra["id"] == "brats-glioma-cascade-et-v3-fold2" and p.cfg.options["refine"] == "et"
    assert p.extra["initialised_from"]["id"] == "brats-glioma-soup-v9-v12-fold2"
    digests = [bundles.read_manifest(str(tmp_path / f"brats-glioma-soup-v9-v12-fold{k}")).weights_sha256[:12]
               for k in range(len(FOLDS))]
    assert p.guide is not None and p.guide.key.endswith(",".join(digests))
    longer = plan(all_standins, "2mm-cv-soup-long", 4, 100, 0, fold=3)  # the average trained on, at 1e-4
    assert longer.extra["initialised_from"]["id"] == "brats-glioma-soup-v9-v12-fold3"
    assert longer.extra["id"] == "brats-glioma-v15-fold3" and longer.cfg.lr == 1e-4 and longer.guide is None
    assert longer.cfg.without_enhancement == 0.2 and longer.cfg.region_weights == (1.0, 2.0, 1.0)
    whole = plan(all_standins, "2mm-cv-soup-whole", 4, 100, 0, fold=1)  # the average trained on whole brains
    assert whole.extra["initialised_from"]["id"] == "brats-glioma-soup-v9-v12-fold1"
    assert whole.extra["id"] == "brats-glioma-v17-fold1" and whole.cfg.lr == 1e-4 and whole.guide is None
    assert whole.cfg.patch == (80, 96, 80) and longer.cfg.patch == (64, 64, 64)
    v3 = p.init.network  # stands in for the fold's trained cascades, found by name as the averages are
    with torch.no_grad():
        v3.fine.head.weight.add_(0.5)  # as if stage 2 had trained (it starts at zero)

    def stand_in(name: str) -> None:
        bundles.save(v3, str(tmp_path / name), dict(p.init.manifest.document, id=name, network="coarse_to_fine",
                                                    options=p.cfg.options))

    stand_in("brats-glioma-cascade-et-v3-fold2")
    on = plan(all_standins, "1mm-cascade-et-soup-long", 4, 100, 1, fold=2)
    assert on.extra["initialised_from"]["id"] == "brats-glioma-cascade-et-v3-fold2"
    assert on.extra["id"] == "brats-glioma-cascade-et-v4-fold2" and on.cfg.lr == 3e-4
    assert torch.equal(on.init.network.fine.state_dict()["head.weight"], v3.fine.state_dict()["head.weight"])
    assert on.guide is not None and on.guide.key == p.guide.key  # the same out-of-fold averages guide it
    assert (on.cfg.options, on.cfg.fg_fraction, on.cfg.case_weights) == (p.cfg.options, p.cfg.fg_fraction,
                                                                        p.cfg.case_weights)
    stand_in("brats-glioma-cascade-et-v4-fold2")
    again = plan(all_standins, "1mm-cascade-et-soup-longer", 4, 100, 2, fold=2)  # and once more, from v4
    assert again.extra["initialised_from"]["id"] == "brats-glioma-cascade-et-v4-fold2"
    assert again.extra["id"] == "brats-glioma-cascade-et-v5-fold2" and again.guide.key == p.guide.key
    stand_in("brats-glioma-cascade-et-v5-fold2")
    fourth = plan(all_standins, "1mm-cascade-et-soup-longer2", 4, 100, 3, fold=2)  # and again, from v5
    assert fourth.extra["initialised_from"]["id"] == "brats-glioma-cascade-et-v5-fold2"
    assert fourth.extra["id"] == "brats-glioma-cascade-et-v6-fold2" and fourth.guide.key == p.guide.key
    half = str(tmp_path / "v4-fp16")  # its fp16 copy holds the same stage 1, as fp16 stores it
    assert cli_main("convert", str(tmp_path / "brats-glioma-cascade-et-v4-fold2"), "--out", half).returncode == 0
    assert plan(all_standins, "1mm-cascade-et-soup-longer", 4, 100, 2, fold=2, init_from=half).guide.key == p.guide.key
    with torch.no_grad():  # a cascade whose stage 1 is not the average that guides the fold: refused
        v3.coarse.head.weight.add_(0.01)
    shutil.rmtree(tmp_path / "brats-glioma-cascade-et-v4-fold2")
    stand_in("brats-glioma-cascade-et-v4-fold2")
    with pytest.raises(InputError, match="stage 1 is not brats-glioma-soup-v9-v12-fold2"):
        plan(all_standins, "1mm-cascade-et-soup-longer", 4, 100, 2, fold=2)
    with pytest.raises(InputError, match="not a cascade"):  # nor is a 2 mm model a cascade to train on
        plan(all_standins, "1mm-cascade-et-soup-long", 4, 100, 1, fold=2, init_from="brats-glioma-v9-fold2")


def test_a_cascade_fold_refines_its_own_2mm_fold_and_trains_on_out_of_fold_guides(all_standins, tmp_path):
    """Fold 0 of the 1 mm cascade, one step: stage 1 is brats-glioma-v9-fold0 (frozen), every
    training case's guide channels come from the 2 mm fold model that held that case out, and the
    held-out fold is segmented through ``segment`` by the cascade itself."""
    run = tmp_path / "cascade"
    out = train_real(all_standins, str(run), variant="1mm-cascade-cv", fold=0, epochs=1, iters=1,
                     cache_dir=str(tmp_path / "cache"), log=lambda *a: None)
    b = bundles.load(out)
    m = b.manifest.to_json()
    assert m["id"] == "brats-glioma-cascade-v4-fold0" and m["network"] == "coarse_to_fine"
    assert m["preprocessing"]["spacing_mm"] == 1.0 and m["initialised_from"]["id"] == "brats-glioma-v9-fold0"
    stage1 = bundles.load("brats-glioma-v9-fold0").network.state_dict()
    assert all(torch.equal(b.network.coarse.state_dict()[k], v) for k, v in stage1.items())  # frozen
    fine = b.network.fine.state_dict()  # started from the same weights, and trained
    assert fine["head.weight"].shape == stage1["head.weight"].shape and not torch.equal(fine["head.weight"],
                                                                                      stage1["head.weight"])
    assert sorted(m["metrics"]["validation_segment"]["per_case"]) == sorted(FOLDS[0])
    cached = {os.path.basename(f).rsplit("-", 1)[0]: f for f in glob.glob(str(tmp_path / "cache" / "*.npz"))
              if np.load(f)["data"].shape[0] == 7}
    assert set(cached) == {c for fold in FOLDS[1:] for c in fold}  # the training cases, with their guides
    case = FOLDS[3][0]
    with np.load(cached[case]) as z:
        sequences, guide = torch.from_numpy(z["data"][:4].astype(np.float32)), z["data"][4:].astype(np.float32)
    expected = b.network.guide(sequences, bundles.load("brats-glioma-v9-fold3").network).numpy()
    assert np.abs(guide - expected).max() < 2e-3  # by the model that never saw it (fp16 in the cache)


@pytest.fixture(scope="module")
def fold_runs(all_standins, tmp_path_factory):
    """Folds 0 and 1 of the cross-validation, trained for two short epochs: their run folders."""
    root = tmp_path_factory.mktemp("folds")
    for k in (0, 1):
        # fold 1 exports into a folder that does not exist yet (--export): made, not an error after training
        train_real(all_standins, str(root / f"fold{k}"), variant="2mm-cv", fold=k, epochs=2, iters=1,
                   cache_dir=str(root / "cache"), log=lambda *a: None,
                   export=str(root / "models" / "brats-glioma-v2-fold1") if k == 1 else None)
    return root


def fold_bundle(fold_runs, k: int):
    """Where the fixture's fold k exported its bundle (fold 1 with --export, into a folder made for it)."""
    return fold_runs / "models" / "brats-glioma-v2-fold1" if k == 1 else fold_runs / f"fold{k}" / f"brats-glioma-v2-fold{k}"


def test_a_fold_exports_its_last_epoch_with_out_of_fold_figures_per_grade(fold_runs):
    run = fold_runs / "fold0"
    out = str(run / "brats-glioma-v2-fold0")
    m = bundles.read_manifest(out).to_json()
    assert m["id"] == "brats-glioma-v2-fold0" and sorted(m["training_data"]["validation"]) == sorted(FOLDS[0])
    assert m["cross_validation"]["fold"] == 0 and "BraTS2021_01477" in m["training_data"]["train"]
    # the held-out fold chooses nothing: last epoch's weights, no postprocessing searched on it
    last = load_checkpoint(str(run / "checkpoint_last.pt"))["model"]
    net = bundles.load(out).network
    assert all(np.array_equal(net.state_dict()[k].numpy(), v.numpy()) for k, v in last.items())
    v = m["metrics"]["validation_segment"]
    assert "postprocessing_search" not in v and m["postprocessing"]["min_component_voxels"] == 0
    g = v["by_grade"]
    assert (g["all"]["cases"], g["HGG"]["cases"], g["low-grade"]["cases"], g["little-ET"]["cases"]) == (7, 5, 2, 0)
    assert g["without_et"]["cases"] == 1 and 0 <= g["without_et"]["none_predicted"] <= 1
    hgg = [c for c in FOLDS[0] if GRADES[c] == "HGG"]
    assert g["HGG"]["dice_TC"] == pytest.approx(np.mean([v["per_case"][c]["TC"]["dice"] for c in hgg]))


def test_an_ensemble_of_folds_records_their_pooled_out_of_fold_figures(all_standins, fold_runs):
    folds = [str(fold_bundle(fold_runs, k)) for k in (0, 1)]
    doc = ensemble_manifest(all_standins, folds, log=lambda *a: None)
    oof = doc["metrics"]["out_of_fold"]
    assert sorted(oof["cases"]) == sorted(FOLDS[0] + FOLDS[1]) and oof["folds"] == [0, 1]
    fold1 = bundles.read_manifest(folds[1]).document["metrics"]["validation_segment"]["per_case"]
    assert oof["per_case"]["BraTS2021_01477"] == fold1["BraTS2021_01477"]
    assert oof["by_grade"]["all"]["cases"] == 14 and oof["by_grade"]["without_et"]["cases"] == 2
    assert sorted(doc["training_data"]["train"]) == sorted(GRADES)
    # the ensemble's own postprocessing: chosen on the pooled held-out cases, each segmented again by its
    # fold with all four sequences, without T1 and without T2, for the mean over those three
    search = doc["metrics"]["out_of_fold_postprocessed"]
    assert sorted(search["cases"]) == sorted(oof["cases"]) and "postprocessing_search" in search
    s = search["postprocessing_search"]
    assert s["conditions"] == ["all four", "no T1", "no T2"]
    best = max(s["mean_dice"], key=lambda pd: pd[1])[0]
    assert doc["postprocessing"] == best
    for (_, criterion), *each in zip(s["mean_dice"], *s["by_condition"].values()):
        assert criterion == pytest.approx(np.mean(each))
    chosen = [d for p, d in zip(s["mean_dice"], s["by_condition"]["all four"]) if p[0] == best][0]
    assert np.mean([search["mean"][f"dice_{r}"] for r in ("WT", "TC", "ET")]) == pytest.approx(chosen)
    for name in ("no T1", "no T2"):  # their figures with the chosen setting, per grade
        missing = search["missing_sequences"][name]
        assert missing["by_grade"]["all"]["cases"] == 14
        here = [d for p, d in zip(s["mean_dice"], s["by_condition"][name]) if p[0] == best][0]
        assert np.mean([missing["mean"][f"dice_{r}"] for r in ("WT", "TC", "ET")]) == pytest.approx(here)
    # and its window: both tried on the same cases, the faster whole-volume pass unless clearly worse
    w = search["window_search"]
    assert doc["window"] == w["chosen"] and w["other"]["window"] != w["chosen"]
    assert doc["window"] == ("whole" if w["mean_dice"]["whole"] >= w["mean_dice"]["patch"] - WINDOW_TOLERANCE else "patch")
    assert w["mean_dice"][w["chosen"]] == pytest.approx(max(d for _, d in s["mean_dice"]))
    assert doc["note"].startswith("research model (the fold models of a cross-validation averaged) trained on 32 real")
    with pytest.raises(InputError, match="not distinct folds"):
        ensemble_manifest(all_standins, [folds[0], folds[0]], log=lambda *a: None)


def test_fold_all_trains_the_design_on_every_case_and_takes_its_folds_figures(all_standins, fold_runs, tmp_path,
                                                                               monkeypatch):
    """``--fold all`` (nnU-Net's ``all``): a fold variant's design on all 32 cases, none held out;
    its figures, postprocessing and window are those its five fold models give out of fold."""
    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setenv("BRAINTUMORSEG_MODELS", str(models))
    first = plan(all_standins, "2mm-cv", 1, 1, 0, fold="all")
    assert sorted(c.case_id for c in first.train_cases) == sorted(GRADES) and first.val_cases == []
    assert first.extra["id"] == "brats-glioma-v2-all" and "cross_validation" not in first.extra
    assert first.extra["all_folds"]["design_folds"] == [f"brats-glioma-v2-fold{k}" for k in range(len(FOLDS))]
    save_tiny_bundle(np.random.default_rng(0).random((4, 32, 32, 32), np.float32), models / "brats-glioma-v5-all",
                     model_id="brats-glioma-v5-all")
    p = plan(all_standins, "2mm-cv-tc", 1, 1, 0, fold="all")  # the chain goes on from its own "all" model
    assert p.extra["initialised_from"]["id"] == "brats-glioma-v5-all" and p.extra["id"] == "brats-glioma-v6-all"
    assert set(p.cfg.case_weights) == {c for c in GRADES if GRADES[c] != "HGG"}  # every rare case, none held out
    with pytest.raises(InputError, match="or all"):
        plan(all_standins, "2mm-cv", 1, 1, 0, fold="al")

    # with only two of the design's five folds installed: no figures and no postprocessing of its own
    for k in (0, 1):
        os.symlink(fold_bundle(fold_runs, k), models / f"brats-glioma-v2-fold{k}")
    out = train_real(all_standins, str(tmp_path / "all"), variant="2mm-cv", fold="all", epochs=1, iters=1,
                     cache_dir=str(fold_runs / "cache"), log=lambda *a: None)
    m = bundles.read_manifest(out).to_json()
    assert m["metrics"] == {} and m["postprocessing"]["min_component_voxels"] == 0
    assert sorted(m["training_data"]["train"]) == sorted(GRADES) and m["training_data"]["validation"] == []
    assert m["all_folds"]["exported"] == "last epoch (no case held out)"


def test_fold_all_takes_its_figures_from_an_ensemble_of_exactly_its_fold_models(all_standins, fold_runs, tmp_path,
                                                                               monkeypatch):
    """``--figures-from ENSEMBLE``: the ensemble ``ensemble --validate-on`` made of the design's five
    fold models gives the ``all`` model its figures, postprocessing and window, without segmenting
    the pooled held-out cases again; an ensemble of other weights, or chosen with four sequences
    only (an earlier protocol), or used with a fold model, is refused before any training."""
    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setenv("BRAINTUMORSEG_MODELS", str(models))
    for k in range(len(FOLDS)):  # the fixture trained folds 0 and 1: they stand in for all five
        os.symlink(fold_bundle(fold_runs, k % 2), models / f"brats-glioma-v2-fold{k}")
    folds = [str(models / f"brats-glioma-v2-fold{k}") for k in range(len(FOLDS))]
    search = {"conditions": ["all four", "no T1", "no T2"], "mean_dice": [[{"min_et_voxels": 500}, 0.7]]}
    fields = {"metrics": {"out_of_fold": {"cases": ["a"]},
                          "out_of_fold_postprocessed": {"cases": ["a"], "postprocessing_search": search}},
              "postprocessing": {"min_et_voxels": 500, "min_component_voxels": 1000, "fill_core_holes": False},
              "window": "patch"}
    ensembles.save_ensemble(models / "design", folds, fields)
    run = tmp_path / "all"
    common = dict(variant="2mm-cv", epochs=1, iters=1, cache_dir=str(fold_runs / "cache"), log=lambda *a: None)
    out = train_real(all_standins, str(run), fold="all", figures_from="design", **common)
    m = bundles.read_manifest(out).to_json()
    assert m["metrics"] == fields["metrics"] and m["design_figures_from"] == "design"
    assert m["postprocessing"] == fields["postprocessing"] and bundles.load(out).manifest.window == "patch"

    older = dict(fields, metrics={"out_of_fold": {}, "out_of_fold_postprocessed": {
        "postprocessing_search": dict(search, conditions=["all four"])}})
    ensembles.save_ensemble(models / "older", folds, older)
    ensembles.save_ensemble(models / "other", folds[:4] + [str(fold_bundle(fold_runs, 1))], fields)

    def refused(name, fold, why):
        fresh = tmp_path / f"refused-{name}-{fold}"
        with pytest.raises(InputError, match=why):
            train_real(all_standins, str(fresh), fold=fold, figures_from=name, **common)
        assert not fresh.exists()  # refused before the run folder is made

    refused("older", "all", "without T1 and without T2")
    refused("other", "all", "not an ensemble of this design's folds")
    refused("design", 0, "for --fold all")
    one_line_error(cli_main("train-recipe", "brats-glioma", "--data", all_standins, "--variant", "2mm-cv", "--fold", "0",
                            "--out", str(tmp_path / "cli"), "--figures-from", "design"), "--figures-from is for --fold all")
    one_line_error(cli_main("train-recipe", "brats-glioma", "--data", all_standins, "--variant", "2mm-cv",
                            "--pack-to", str(tmp_path / "p"), "--figures-from", "design"), "--figures-from belong to a run")
    (models / "brats-glioma-v2-fold4").unlink()
    os.symlink(fold_bundle(fold_runs, 1), models / "brats-glioma-v2-fold4")  # other weights than made of
    refused("design", "all", "other weights than the ensemble was made with")


@pytest.mark.slow
def test_fold_all_takes_the_pooled_figures_of_its_five_fold_models(all_standins, fold_runs, tmp_path, monkeypatch):
    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setenv("BRAINTUMORSEG_MODELS", str(models))
    for k in range(len(FOLDS)):
        if k > 1:  # the fixture trained folds 0 and 1
            train_real(all_standins, str(fold_runs / f"fold{k}"), variant="2mm-cv", fold=k, epochs=1, iters=1,
                       cache_dir=str(fold_runs / "cache"), log=lambda *a: None)
        os.symlink(fold_bundle(fold_runs, k), models / f"brats-glioma-v2-fold{k}")
    out = train_real(all_standins, str(tmp_path / "all"), variant="2mm-cv", fold="all", epochs=1, iters=1,
                     cache_dir=str(fold_runs / "cache"), log=lambda *a: None)
    m = bundles.read_manifest(out).to_json()
    oof = m["metrics"]["out_of_fold"]
    assert sorted(oof["cases"]) == sorted(GRADES) and oof["folds"] == list(range(len(FOLDS)))
    assert m["postprocessing"] == max(m["metrics"]["out_of_fold_postprocessed"]["postprocessing_search"]["mean_dice"],
                                      key=lambda pd: pd[1])[0]
    assert m["window"] == m["metrics"]["out_of_fold_postprocessed"]["window_search"]["chosen"]
    assert bundles.load(out).manifest.window == m["window"]


def test_a_model_trained_on_brats_2021_cases_cites_that_release():
    only_2018 = data_credits(["Brats18_CBICA_ABM_1", "Brats18_TCIA10_628_1"])
    assert only_2018["citations"] == CITATIONS and "BraTS 2018 training data" in only_2018["licence"]
    assert only_2018["source"].startswith("BraTS 2018 training cases")
    mixed = data_credits(["Brats18_CBICA_ABM_1", "BraTS2021_01484"])
    assert mixed["citations"][:len(CITATIONS)] == CITATIONS and "arXiv:2107.02314" in mixed["citations"][-1]
    assert "BraTS 2018 and 2021 training data" in mixed["licence"] and mixed["source"].startswith("BraTS 2018 and 2021")


def test_every_shipped_real_model_credits_the_releases_it_was_trained_on():
    # the BraTS data-use terms ask a model trained on BraTS 2021 cases to cite that release's paper
    shipped = glob.glob(os.path.join(bundles.shipped_models_dir(), "brats-glioma-*"))
    assert shipped
    for folder in shipped:
        doc = bundles.read_document(folder)
        ids = doc["training_data"]["train"]
        assert any(c.startswith("BraTS2021") for c in ids), folder  # all of today's were
        assert doc["citations"] == data_credits(ids)["citations"], folder
        assert doc["licence"] == data_credits(ids)["licence"], folder
        assert doc["training_data"]["source"] == data_credits(ids)["source"], folder


# Run as a pack is run on a GPU machine without SimpleITK (nor nibabel, pydicom): importing any of
# them fails there, so it fails here too.
_WITHOUT_IMAGE_LIBRARIES = """
import importlib.abc, runpy, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("SimpleITK", "nibabel", "pydicom"):
            raise ImportError(f"{name} is not installed on this machine")
sys.meta_path.insert(0, Absent())
sys.argv = ["braintumorseg"] + sys.argv[1:]
runpy.run_module("BrainTumorSegLib", run_name="__main__")
"""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.fixture(scope="module")
def packed(all_standins, fold_runs, tmp_path_factory):
    """The 32 stand-ins packed on the 2 mm grid (from the folds' cache)."""
    out = str(tmp_path_factory.mktemp("pack") / "pack")
    r = cli_main("train-recipe", "brats-glioma", "--data", all_standins, "--variant", "2mm-cv", "--pack-to", out,
                 "--cache", str(fold_runs / "cache"))
    assert r.returncode == 0, r.stderr
    return out


def test_a_pack_holds_every_case_losslessly_and_checks_its_files(packed, fold_runs, tmp_path, all_standins):
    p = read_pack(packed)
    assert sorted(c.case_id for c in p.cases) == sorted(GRADES) and p.spacing == 2.0
    assert os.stat(packed).st_mode & 0o777 == 0o777 & ~_umask()  # a folder like any other, not owner-only
    abm = next(c for c in p.cases if c.case_id == "Brats18_CBICA_ABM_1")
    cached = glob.glob(str(fold_runs / "cache" / "Brats18_CBICA_ABM_1-*.npz"))
    assert len(cached) == 1 and os.path.getsize(abm.path) < os.path.getsize(cached[0])  # compressed
    with np.load(abm.path) as a, np.load(cached[0]) as b:
        assert sorted(a.files) == sorted(b.files) and all(np.array_equal(a[k], b[k]) for k in a.files)
    # the same pack on a 1 mm-native variant, a cascade, into an existing folder, of a pack: refused
    with pytest.raises(InputError, match="pack of cases on a 2 mm grid; this variant trains on each case's own grid"):
        split(packed, None, None)
    one_line_error(cli_main("train-recipe", "brats-glioma", "--data", all_standins, "--variant", "2mm-cv",
                            "--pack-to", str(tmp_path / "p"), "--fold", "0", "--out", "r"), "--out, --fold belong to a run")
    one_line_error(cli_main("train-recipe", "brats-glioma", "--data", all_standins, "--variant", "1mm-cascade-cv",
                            "--pack-to", str(tmp_path / "c")), "guide channels")
    one_line_error(cli_main("train-recipe", "brats-glioma", "--data", all_standins, "--variant", "2mm-cv",
                            "--pack-to", packed), packed, "exists")
    one_line_error(cli_main("train-recipe", "brats-glioma", "--data", packed, "--variant", "2mm-cv",
                            "--pack-to", str(tmp_path / "again")), "is a pack already")
    one_line_error(cli_main("train-recipe", "brats-glioma", "--data", packed, "--variant", "2mm-cv", "--fold", "0",
                            "--out", str(tmp_path / "r"), "--export", str(tmp_path / "b")), "exports no bundle")
    r = cli_main("train-recipe", "brats-glioma", "--data", packed, "--out", str(tmp_path / "r"), "--workers", "-1")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].endswith("--workers: '-1': a number of processes, "
                                                                           "0 or more")
    # cases prepared otherwise than this version prepares them, or a changed file: found before any training
    stale = tmp_path / "stale"
    shutil.copytree(packed, stale)
    doc = json.loads((stale / "pack.json").read_text())
    (stale / "pack.json").write_text(json.dumps({**doc, "preparation": "an older way"}))
    one_line_error(cli_main("train-recipe", "brats-glioma", "--data", str(stale), "--variant", "2mm-cv", "--fold",
                            "0", "--out", str(tmp_path / "run")), "an older way", "pack them again")
    broken = tmp_path / "broken"
    shutil.copytree(packed, broken)
    with open(os.path.join(broken, os.path.basename(abm.path)), "r+b") as f:
        f.seek(100)
        f.write(b"\0\0\0")
    one_line_error(cli_main("train-recipe", "brats-glioma", "--data", str(broken), "--variant", "2mm-cv", "--fold",
                            "0", "--out", str(tmp_path / "run")), os.path.basename(abm.path), "sha256")
    assert not (tmp_path / "run").exists()


def test_a_fold_trained_from_a_pack_without_simpleitk_is_the_fold_trained_from_the_cases(packed, fold_runs,
                                                                                           all_standins, tmp_path):
    run = tmp_path / "fold0"
    r = subprocess.run([sys.executable, "-c", _WITHOUT_IMAGE_LIBRARIES, "train-recipe", "brats-glioma", "--data",
                        packed, "--variant", "2mm-cv", "--fold", "0", "--epochs", "2", "--iters", "1", "--out",
                        str(run), "--workers", "1"], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    compact = run / "checkpoint_fp16.pt"
    assert f"checkpoint: {compact}" in r.stdout and "--from-checkpoint" in r.stdout
    # the same patches, the same steps: the weights of fold 0 trained from the raw cases (the fixture)
    ours, theirs = load_checkpoint(str(run / "checkpoint_last.pt")), load_checkpoint(
        str(fold_runs / "fold0" / "checkpoint_last.pt"))
    assert ours["model"].keys() == theirs["model"].keys()
    assert all(torch.equal(ours["model"][k], theirs["model"][k]) for k in ours["model"])
    small = load_checkpoint(str(compact))
    assert "optimizer" not in small and small["epoch"] == 1
    assert all(v.dtype == torch.float16 for v in small["model"].values() if v.is_floating_point())
    assert os.path.getsize(compact) < os.path.getsize(run / "checkpoint_last.pt") / 4
    # brought back: validated through segment on the raw cases and exported as the fold's bundle
    with pytest.raises(InputError, match="is a pack"):
        export_checkpoint(packed, str(run), str(compact), str(tmp_path / "x"), variant="2mm-cv", epochs=2, iters=1,
                          fold=0)
    out = export_checkpoint(all_standins, str(run), str(compact), str(tmp_path / "brats-glioma-v2-fold0"),
                            variant="2mm-cv", epochs=2, iters=1, fold=0, log=lambda *a: None)
    m = bundles.read_manifest(out).to_json()
    assert sorted(m["metrics"]["validation_segment"]["per_case"]) == sorted(FOLDS[0])
    assert m["training"]["trained"]["checkpoint"] == "checkpoint_fp16.pt"
    net = bundles.load(out).network.state_dict()
    assert all(torch.equal(net[k], v.half().float()) for k, v in theirs["model"].items() if v.is_floating_point())


@pytest.mark.slow
def test_the_gpu_script_trains_folds_from_a_pack_into_what_a_device_call_brings_back(packed, tmp_path):
    out = tmp_path / "OUT"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "Testing", "Device", "train_folds.py"), "--pack", packed,
                        "--variant", "2mm-cv", "--epochs", "1", "--iters", "1", "--folds", "0", "3", "--workers", "0",
                        "--out", str(out)], capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(os.listdir(out)) == ["fold0.pt", "fold3.pt", "folds.log"]  # at most 8 files come back
    assert all(os.path.getsize(out / f) < 16 * 2 ** 20 for f in os.listdir(out))
    log = (out / "folds.log").read_text()
    assert log.startswith("2 folds in") and "failed: none" in log and "== fold 3: rc 0" in log
    assert load_checkpoint(str(out / "fold3.pt"))["epoch"] == 0
    # a fold still running at the deadline: stopped, its last finished epoch comes back, said so
    late = tmp_path / "late"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "Testing", "Device", "train_folds.py"), "--pack", packed,
                        "--variant", "2mm-cv", "--epochs", "5000", "--iters", "1", "--folds", "1", "--workers", "0",
                        "--deadline", "120", "--out", str(late)], capture_output=True, text=True, timeout=1200)
    assert r.returncode == 1 and "0 of 1 folds trained to the end, 1 stopped early" in r.stdout, r.stdout + r.stderr
    done = load_checkpoint(str(late / "fold1.pt"))["epoch"] + 1
    assert 1 <= done < 5000 and f"stopped at the deadline: fold 1 after epoch {done} of 5000" in \
        (late / "folds.log").read_text()


def test_a_variant_that_keeps_its_best_epoch_brings_that_one_back_from_a_pack(packed, tmp_path):
    out = train_real(packed, str(tmp_path / "run"), variant="2mm", epochs=2, iters=1, log=lambda *a: None)
    assert out == str(tmp_path / "run" / "checkpoint_fp16.pt")
    best = load_checkpoint(str(tmp_path / "run" / "checkpoint_best.pt"))["model"]
    small = load_checkpoint(out)
    assert small["settings"] == {"amp": False} and small["epoch"] == 1
    assert all(torch.equal(small["model"][k], v.half() if v.is_floating_point() else v) for k, v in best.items())
