"""Training on tiny real cases: 2 mm phantoms written to disk, small patches."""
import json
import os
import shutil
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import cli_main, run_cli

from BrainTumorSegLib.errors import InputError
from BrainTumorSegLib.models import bundles
from BrainTumorSegLib.networks import build
from BrainTumorSegLib.networks.losses import sigmoid_dice_bce, soft_dice_loss
from BrainTumorSegLib.read.cases import SEQUENCES, find_cases
from BrainTumorSegLib.training import (
    PatchDataset,
    TrainConfig,
    cache_case,
    check_cases,
    compact_checkpoint,
    compute_loss,
    train,
)
from BrainTumorSegLib.training.augmentation import (
    AUGMENTATIONS,
    Augmentation,
    _spatial,
    carve_tumor,
    cover_partially,
    edema_intensity,
    fill_with_fluid,
    fluid_intensity,
    make_core_solid,
    remove_enhancement,
    simulate_thick_slices,
    vary_brain_mask,
)
from BrainTumorSegLib.training.data import CachedCase, carve_patch, crop_patch, sample_patch

SMALL = {"resunet": {"channels": [4, 8, 16, 32, 32], "blocks": [1, 1, 1, 1, 1]},
         "agse_vnet": {"dropout": 0.0}}  # its 0.5 dropout makes 10 steps too noisy to compare


@pytest.fixture(scope="module")
def small_cases(tmp_path_factory, phantom_dir):
    """The two phantom cases at 3 mm (80 x 80 x 52), BraTS layout."""
    root = tmp_path_factory.mktemp("small_cases")
    for case in find_cases(phantom_dir):
        out = root / case.case_id
        out.mkdir()
        regrid(case, str(out), (80, 80, 52), 3.0)
    return str(root)


def regrid(case, out_dir: str, size, spacing: float) -> None:
    """Write ``case``'s files into ``out_dir`` resampled to a grid of ``size`` voxels of ``spacing`` mm."""
    for role, p in case.paths.items():
        img = sitk.ReadImage(p)
        grid = sitk.Image(list(size), img.GetPixelID())
        grid.SetSpacing((spacing,) * 3)
        grid.SetOrigin(img.GetOrigin())
        interp = sitk.sitkNearestNeighbor if role == "seg" else sitk.sitkLinear
        sitk.WriteImage(sitk.Resample(img, grid, sitk.Transform(), interp, 0), os.path.join(out_dir, os.path.basename(p)))


@pytest.mark.parametrize("clinical", [False, True])
def test_patches_oversample_tumor_and_are_reproducible(small_cases, tmp_path, clinical):
    files = [cache_case(c, str(tmp_path)) for c in find_cases(small_cases)]
    ds = PatchDataset(files, (32, 32, 32), 60, seed=3, fg_fraction=1 / 3, domain_randomization=False,
                      clinical_augmentation=clinical)
    with_tumor = sum(int((ds[i][1] > 0).any()) for i in range(60))
    assert with_tumor >= 20  # at least about a third of the patches hold tumor
    a, b = ds[5], ds[5]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    ds.epoch = 1
    assert not torch.equal(ds[5][0], a[0])


def test_case_weights_decide_how_often_a_case_is_drawn(small_cases, tmp_path):
    files = [cache_case(c, str(tmp_path)) for c in find_cases(small_cases)][:2]
    ds = PatchDataset(files, (32, 32, 32), 40, seed=0, fg_fraction=0.5, domain_randomization=False, weights=[0.0, 1.0])
    for i in range(40):
        ds[i]
    assert set(ds._cache) == {files[1]}  # weight 0: never drawn
    uniform = PatchDataset(files, (32, 32, 32), 40, seed=0, fg_fraction=0.5, domain_randomization=False)
    for i in range(40):
        uniform[i]
    assert set(uniform._cache) == set(files)
    with pytest.raises(ValueError, match="1 case weights for 2 cases"):
        PatchDataset(files, (32, 32, 32), 1, seed=0, fg_fraction=0.5, domain_randomization=False, weights=[1.0])


def test_cache_registers_a_moved_sequence_as_segment_would(small_cases, tmp_path):
    """A saved case whose FLAIR was never co-registered (here: the T1ce as every sequence, the
    FLAIR moved by 6 mm): the cache registers it, so the channels line up again."""
    case = find_cases(small_cases)[0]
    saved = tmp_path / "saved" / case.case_id
    saved.mkdir(parents=True)
    t1ce = sitk.ReadImage(case.paths["t1ce"])
    moved = sitk.Resample(t1ce, t1ce, sitk.TranslationTransform(3, (6.0, 0.0, 0.0)), sitk.sitkLinear, 0)
    for role, p in case.paths.items():
        img = sitk.ReadImage(p) if role == "seg" else moved if role == "flair" else t1ce
        sitk.WriteImage(img, str(saved / os.path.basename(p)))
    (tmp_path / "cache").mkdir()
    c = CachedCase(cache_case(find_cases(str(tmp_path / "saved"))[0], str(tmp_path / "cache")))
    brain = c.data[1] != 0
    t1ce_w = c.data[1].astype(np.float32)

    def matches_t1ce(x: np.ndarray) -> float:
        return float(np.corrcoef(x[brain], t1ce_w[brain])[0, 1])

    unregistered = matches_t1ce(np.roll(t1ce_w, 2, axis=2))  # the 6 mm shift: two 3 mm voxels along x
    assert matches_t1ce(c.data[3].astype(np.float32)) > max(0.95, unregistered + 0.1), unregistered


def _neighbour_difference(v: np.ndarray, axis: int) -> float:
    return float(np.abs(np.diff(v, axis=axis))[4:-4, 4:-4, 4:-4].mean())


def test_thick_slices_smooth_a_sequence_along_one_axis_and_keep_the_background():
    rng = np.random.default_rng(0)
    brain = np.zeros((40, 40, 40), bool)
    brain[2:-2, 2:-2, 2:-2] = True
    x = (rng.normal(size=(4, 40, 40, 40)) * brain).astype(np.float32)
    changed = 0
    for seed in range(6):
        out = simulate_thick_slices(x.copy(), np.random.default_rng(seed), (2.0, 2.0, 2.0))
        assert not out[:, ~brain].any()
        for c in range(4):
            if np.array_equal(out[c], x[c]):
                continue
            changed += 1
            d = [_neighbour_difference(out[c], a) for a in range(3)]
            thick = int(np.argmin(d))
            # a slab-averaged axis: neighbours along it nearly equal; the other axes still vary
            assert d[thick] < 0.6 * min(d[a] for a in range(3) if a != thick), d
    assert 6 <= changed < 24  # each sequence on its own, with probability 0.6


def test_tighter_brain_mask_keeps_tumor_and_renormalises_each_sequence(small_cases, tmp_path):
    case = CachedCase(cache_case(find_cases(small_cases)[0], str(tmp_path)))
    data = case.data.astype(np.float32)
    out = vary_brain_mask(case.data, case.classes, np.random.default_rng(0))
    before, after = data.any(0), out.any(0)
    assert after.sum() < before.sum() and not (after & ~before).any()
    assert after[case.classes > 0].all()
    for c in range(4):
        inside = out[c][after]
        assert abs(inside.mean()) < 1e-4 and abs(inside.std() - 1) < 1e-3
        assert np.corrcoef(inside, data[c][after])[0, 1] > 0.9999  # the same intensities, z-scored again


@pytest.mark.parametrize("name", ["resunet", "agse_vnet", "cga_unet", "dmda_unet"])
def test_a_few_steps_lower_the_loss(name, small_cases, tmp_path):
    torch.manual_seed(0)
    files = [cache_case(c, str(tmp_path)) for c in find_cases(small_cases)]
    net = build(name, **SMALL.get(name, {}))
    ds = PatchDataset(files, (32, 32, 32), 2, seed=0, fg_fraction=1.0, domain_randomization=False)
    x = torch.stack([ds[0][0], ds[1][0]])
    y = torch.stack([ds[0][1], ds[1][1]])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    losses = []
    for _ in range(10):
        opt.zero_grad()
        out = net(x)
        loss = compute_loss(net, out, y, epoch=25)  # epoch 25: CGA's inter-class term is on
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses


def first_loss(cases, out, batch: int = 1, **setting) -> float:
    """The training loss of a one-iteration ``resunet`` run with one loss ``setting``: the same seed
    and patches for every setting, so that two settings' losses differ only by the loss itself."""
    cfg = TrainConfig(network="resunet", options=SMALL["resunet"], epochs=1, iters_per_epoch=1, batch=batch,
                      patch=(32, 32, 32), seed=1, val_every=1, **setting)
    train(cfg, cases[:1], cases[1:], str(out), log=lambda *a: None)
    return json.loads(torch.load(out / "checkpoint_last.pt", weights_only=True)["history"])[0]["train_loss"]


def assert_refused(cases, out, network: str, message: str, **setting) -> None:
    """A run of ``network`` with a loss ``setting`` it lacks, or a value out of range, is refused."""
    cfg = TrainConfig(network=network, epochs=1, iters_per_epoch=1, patch=(32, 32, 32), **setting)
    with pytest.raises(InputError, match=message):
        train(cfg, cases[:1], cases[1:], str(out), log=lambda *a: None)


def test_region_weights_make_one_region_count_more(small_cases, tmp_path):
    regions = torch.zeros(1, 3, 8, 8, 8)
    regions[:, :, 2:6, 2:6, 2:6] = 1
    logits = (regions * 2 - 1) * 4
    logits[:, 1] = -logits[:, 1]  # right on WT and ET, wrong on the tumor core
    plain = sigmoid_dice_bce(logits, regions)
    assert sigmoid_dice_bce(logits, regions, (1, 1, 1)) == pytest.approx(plain.item())
    assert sigmoid_dice_bce(logits, regions, (1, 2, 1)) > plain * 1.2

    cases = find_cases(small_cases)
    losses = [first_loss(cases, tmp_path / str(w), region_weights=w) for w in (None, (1.0, 2.0, 1.0))]
    assert losses[0] != losses[1]  # same seed, same patch: only the weighting differs
    assert_refused(cases, tmp_path / "agse", "agse_vnet", "region_weights", region_weights=(1, 2, 1))


def test_hardest_voxels_keep_confident_errors_from_being_averaged_away(small_cases, tmp_path):
    regions = torch.zeros(1, 3, 8, 8, 8)
    regions[:, :, 2:6, 2:6, 2:6] = 1
    logits = (regions * 2 - 1) * 4
    logits[:, 1, 2, 2, 2:7] = -8 * (regions[:, 1, 2, 2, 2:7] * 2 - 1)  # five core voxels wrong, with confidence
    plain = sigmoid_dice_bce(logits, regions)
    assert sigmoid_dice_bce(logits, regions, hardest=1.0) == pytest.approx(plain.item(), rel=1e-5)
    hardest = sigmoid_dice_bce(logits, regions, hardest=5 / 512)  # each region's five worst voxels
    assert hardest.item() > plain.item() + 2  # the core's five errors (BCE about 8 each) are a third of the term
    with pytest.raises(ValueError, match="share"):
        sigmoid_dice_bce(logits, regions, hardest=0.0)

    cases = find_cases(small_cases)
    losses = [first_loss(cases, tmp_path / str(share), hardest_voxels=share) for share in (None, 0.1)]
    assert losses[1] > losses[0]  # same seed, same patch: the hardest tenth weighs more than the mean
    for network, share, message in (("agse_vnet", 0.1, "hardest_voxels"), ("resunet", 1.5, "--hardest-voxels 1.5")):
        assert_refused(cases, tmp_path / network, network, message, hardest_voxels=share)


def test_batch_dice_does_not_charge_a_whole_dice_for_a_faint_region_in_a_patch_without_it(small_cases, tmp_path):
    """Per patch, a faint enhancing-tumor probability in a patch without enhancing tumor costs
    almost a whole Dice of that region; over the batch it costs what it adds to the batch's
    overlap. A batch of one is the same either way. ``batch_dice`` reaches the network's loss in a
    run, and a network without it refuses it."""
    probs, target = torch.zeros(2, 3, 4, 4, 4), torch.zeros(2, 3, 4, 4, 4)
    target[0, 2, :2] = 1
    probs[0, 2, :2] = 0.9
    probs[1, 2, 0, 0, 0] = 0.3  # the second patch has no enhancing tumor
    per_patch, batch = soft_dice_loss(probs, target), soft_dice_loss(probs, target, batch=True)
    assert per_patch.item() > 1 / 6 - 0.01 and batch.item() < 0.03
    assert soft_dice_loss(probs[:1], target[:1]).item() == pytest.approx(
        soft_dice_loss(probs[:1], target[:1], batch=True).item(), rel=1e-6)
    weighted = soft_dice_loss(probs, target, (1, 2, 1), batch=True)
    assert weighted.item() == pytest.approx(batch.item() * 3 / 4, rel=1e-4)  # WT and TC empty: only ET's quarter

    cases = find_cases(small_cases)
    losses = [first_loss(cases, tmp_path / str(b), batch=2, batch_dice=b) for b in (False, True)]
    assert losses[0] != losses[1]  # same seed, same patches: only the Dice's reach differs
    assert_refused(cases, tmp_path / "agse", "agse_vnet", "batch_dice", batch_dice=True)


def test_missed_weight_makes_a_missed_voxel_cost_more_than_a_false_one(small_cases, tmp_path):
    """The Tversky index with missed voxels weighed 0.5 is the Dice; weighed 0.7, missing four of a
    region's eight voxels costs three times what adding four false ones does, against 1.7 times
    under the Dice. The weight reaches the network's loss in a run; a network without it, or a
    weight outside (0, 1), is refused."""
    target = torch.zeros(1, 1, 4, 4, 4)
    target[..., :2, :2, :2] = 1                                   # 8 voxels
    missing = target.clone()
    missing[..., 0, :2, :2] = 0                                   # 4 of them missed
    adding = target.clone()
    adding[..., 3, :2, :2] = 1                                    # 4 false ones added
    dice_lost, dice_false = soft_dice_loss(missing, target), soft_dice_loss(adding, target)
    assert (dice_lost.item(), dice_false.item()) == pytest.approx((1 - 8 / 12, 1 - 16 / 20), rel=1e-4)  # 2 TP / (|P| + |G|)
    assert soft_dice_loss(missing, target, missed=0.5).item() == pytest.approx(
        soft_dice_loss(missing, target).item(), rel=1e-6)
    lost, false = soft_dice_loss(missing, target, missed=0.7), soft_dice_loss(adding, target, missed=0.7)
    assert lost.item() == pytest.approx(1 - 4 / (4 + 0.7 * 4), rel=1e-4)
    assert false.item() == pytest.approx(1 - 8 / (8 + 0.3 * 4), rel=1e-4)
    assert lost.item() / false.item() > 3 > 1.7 > dice_lost.item() / dice_false.item()
    with pytest.raises(ValueError, match="missed"):
        soft_dice_loss(missing, target, missed=1.0)

    cases = find_cases(small_cases)
    losses = [first_loss(cases, tmp_path / str(w), missed_weight=w) for w in (None, 0.7)]
    assert losses[0] != losses[1]  # same seed, same patch: only the overlap term's weights differ
    for network, weight, message in (("agse_vnet", 0.7, "missed_weight"), ("resunet", 1.0, "--missed-weight 1.0")):
        assert_refused(cases, tmp_path / network, network, message, missed_weight=weight)


class Killed(Exception):
    """Raised from a run's log line to stop it after an epoch, as a kill would."""


def killed_after(epoch: int, cfg: TrainConfig, cases, out: str, then=lambda: None) -> None:
    """Run (or resume) training in ``out`` and stop it once epoch ``epoch`` (1-based) has been logged,
    its checkpoint written; ``then`` runs just before."""
    def log(msg: str) -> None:
        if msg.startswith(f"epoch={epoch} "):
            then()
            raise Killed

    with pytest.raises(Killed):
        train(cfg, cases[:1], cases[1:], out, resume=True, log=log)


def test_resumed_run_ends_with_the_same_weights(small_cases, tmp_path):
    cases = find_cases(small_cases)
    cfg = TrainConfig(network="resunet", options=SMALL["resunet"], epochs=2, iters_per_epoch=2, batch=1,
                      patch=(32, 32, 32), seed=1, val_every=1)
    train(cfg, cases[:1], cases[1:], str(tmp_path / "a"), log=lambda *a: None)
    killed_after(1, cfg, cases, str(tmp_path / "b"))
    assert torch.load(tmp_path / "b" / "checkpoint_last.pt", weights_only=True)["epoch"] == 0
    train(cfg, cases[:1], cases[1:], str(tmp_path / "b"), resume=True, log=lambda *a: None)
    a = torch.load(tmp_path / "a" / "checkpoint_last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint_last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 1
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert [r["train_loss"] for r in json.loads(a["history"])] == [r["train_loss"] for r in json.loads(b["history"])]


def test_averaged_weights_are_the_mean_of_the_epoch_ends_and_survive_a_resume(small_cases, tmp_path):
    """SWA: from --average-from on, the bundle holds the mean of the weights at each epoch's end."""
    cases = find_cases(small_cases)
    cfg = TrainConfig(network="resunet", options=SMALL["resunet"], epochs=3, iters_per_epoch=2, batch=1,
                      patch=(32, 32, 32), seed=2, val_every=5, lr=1e-2, schedule="constant", average_from=2)
    ends = {}

    def keep(n):
        return lambda: ends.__setitem__(n, torch.load(tmp_path / "b" / "checkpoint_last.pt", weights_only=True)["model"])

    for n in (1, 2):  # killed after each epoch, resumed: the epoch-end weights on the way
        killed_after(n, cfg, cases, str(tmp_path / "b"), then=keep(n))
    exported = train(cfg, cases[:1], cases[1:], str(tmp_path / "b"), resume=True, log=lambda *a: None)
    last = torch.load(tmp_path / "b" / "checkpoint_last.pt", weights_only=True)
    assert last["averaged"] == 2
    ends[3] = last["model"]
    got = bundles.load(exported).network.state_dict()
    moved = 0
    for k, v in got.items():
        if v.is_floating_point():
            assert torch.allclose(v, (ends[2][k] + ends[3][k]) / 2, atol=1e-6), k
            moved += not torch.allclose(ends[2][k], ends[3][k])
    assert moved > 0  # the two snapshots differ, so the mean is neither
    said = []
    whole = train(cfg, cases[:1], cases[1:], str(tmp_path / "a"), log=said.append)  # uninterrupted: the same
    for k, v in bundles.load(whole).network.state_dict().items():
        assert torch.equal(v, got[k]), k
    m = json.load(open(os.path.join(whole, "manifest.json")))
    assert m["training"]["config"]["average_from"] == 2 and not (tmp_path / "a" / "checkpoint_best.pt").exists()
    # the manifest's figures are the average's, validated at export, not those of the last epoch's weights
    line = next(s for s in said if s.startswith("the averaged weights: "))
    assert line.split(": ")[1] == " ".join(f"{k}={v:.4g}" for k, v in m["metrics"]["validation"].items())
    last_epoch = json.loads(last["history"])[-1]
    assert any(abs(m["metrics"]["validation"][k] - last_epoch[k]) > 1e-9 for k in ("dice_WT", "dice_TC", "dice_ET"))


def test_a_run_resumed_with_other_averaging_or_schedule_is_refused(small_cases, tmp_path):
    cases = find_cases(small_cases)
    cfg = TrainConfig(network="resunet", options=SMALL["resunet"], epochs=2, iters_per_epoch=1, batch=1,
                      patch=(32, 32, 32), schedule="constant", average_from=1)
    killed_after(1, cfg, cases, str(tmp_path / "run"))
    for change, message in (({"average_from": None}, "average_from 1; this run has None"),
                            ({"schedule": None}, "schedule constant; this run has cosine")):
        with pytest.raises(InputError, match=message):
            train(replace(cfg, **change), cases[:1], cases[1:], str(tmp_path / "run"), resume=True, log=lambda *a: None)
    train(cfg, cases[:1], cases[1:], str(tmp_path / "run"), resume=True, log=lambda *a: None)  # the same: resumes


def test_a_compact_checkpoint_holds_the_average_where_the_run_kept_one(tmp_path):
    raw, avg = {"w": torch.zeros(3), "n": torch.tensor(7)}, {"w": torch.full((3,), 0.5), "n": torch.tensor(7)}
    torch.save({"model": raw, "average": avg, "averaged": 2, "epoch": 3}, tmp_path / "last.pt")
    torch.save({"model": raw, "epoch": 3}, tmp_path / "plain.pt")
    for name, want in (("last.pt", 0.5), ("plain.pt", 0.0)):
        small = torch.load(compact_checkpoint(str(tmp_path / name), str(tmp_path / f"small-{name}")), weights_only=True)
        assert small["model"]["w"].dtype == torch.float16 and torch.all(small["model"]["w"] == want)
        assert "average" not in small and small["epoch"] == 3


@pytest.mark.parametrize("change, message", [({"average_from": 4}, "--average-from 4: an epoch of the run's 1-3"),
                                             ({"average_from": 0}, "--average-from 0"),
                                             ({"schedule": "warmup"}, "unknown learning-rate schedule 'warmup'"),
                                             ({"schedule": "step"}, "step learning rate")])
def test_averaging_and_schedule_settings_are_checked_before_any_folder(small_cases, tmp_path, change, message):
    cases = find_cases(small_cases)
    cfg = TrainConfig(network="resunet", options=SMALL["resunet"], epochs=3, iters_per_epoch=1, batch=1,
                      patch=(32, 32, 32), **change)
    with pytest.raises(InputError, match=message):
        train(cfg, cases[:1], cases[1:], str(tmp_path / "run"), log=lambda *a: None)
    assert not (tmp_path / "run").exists()


def test_batch_norm_statistics_refuse_weight_averaging(small_cases, tmp_path):
    assert any(getattr(m, "track_running_stats", False) for m in build("agse_vnet", norm="batch").modules())
    cfg = TrainConfig(network="agse_vnet", options={"norm": "batch"}, epochs=1, iters_per_epoch=1, patch=(32, 32, 32),
                      average_from=1)
    cases = find_cases(small_cases)
    with pytest.raises(InputError, match="batch-norm statistics; agse_vnet keeps them"):
        train(cfg, cases[:1], cases[1:], str(tmp_path / "run"), log=lambda *a: None)
    assert not (tmp_path / "run").exists()


def test_bad_training_data_is_listed(small_cases, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(small_cases, root)
    cid = sorted(os.listdir(root))[0]
    os.unlink(root / cid / f"{cid}_flair.nii.gz")
    with pytest.raises(InputError, match=f"1 bad case.*{cid}: .*has no flair file"):
        check_cases(find_cases(root))
    assert len(check_cases(find_cases(root), skip_bad=True)) == 1
    other = sorted(os.listdir(root))[1]
    seg = sitk.ReadImage(str(root / other / f"{other}_seg.nii.gz"))
    a = sitk.GetArrayFromImage(seg)
    a[0, 0, 0] = 9
    bad = sitk.GetImageFromArray(a)
    bad.CopyInformation(seg)
    sitk.WriteImage(bad, str(root / other / f"{other}_seg.nii.gz"))
    with pytest.raises(InputError, match="2 bad case.*label values 9"):
        check_cases(find_cases(root))
    a[0, 0, 0] = 0  # labels fine again, but the seg on another grid than the images
    moved = sitk.GetImageFromArray(a)
    moved.CopyInformation(seg)
    moved.SetOrigin([o + 5.0 for o in seg.GetOrigin()])
    sitk.WriteImage(moved, str(root / other / f"{other}_seg.nii.gz"))
    with pytest.raises(InputError, match=f"2 bad case.*{other}: .*not on the grid of the T1ce image"):
        check_cases(find_cases(root))
    r = run_cli("train", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and "folder not found" in r.stderr


def test_cli_train_exports_a_bundle_that_segments(small_cases, tmp_path):
    r = run_cli("train", "--data", small_cases, "--folds", "2", "--fold", "0", "--out", str(tmp_path / "run"),
                "--epochs", "1", "--iters", "2", "--batch", "1", "--patch", "32", "32", "32",
                "--options", json.dumps(SMALL["resunet"]), "--clinical-augmentation", "--schedule", "constant",
                "--average-from", "1")
    assert r.returncode == 0, r.stderr
    bundle = tmp_path / "run" / "model"
    m = json.load(open(bundle / "manifest.json"))
    assert m["training"]["epochs"] == 1 and "dice_WT" in m["metrics"]["validation"]
    config = m["training"]["config"]  # the run's settings travel with the model
    assert config["clinical_augmentation"] and config["schedule"] == "constant" and config["average_from"] == 1
    r = run_cli("train", "--data", small_cases, "--folds", "2", "--fold", "0", "--out", str(tmp_path / "bad"),
                "--epochs", "1", "--schedule", "warmup")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "schedule 'warmup'" in r.stderr, r.stderr
    assert not (tmp_path / "bad").exists()
    assert os.path.exists(tmp_path / "run" / "log.csv") and os.path.exists(tmp_path / "run" / "config.json")
    with open(tmp_path / "run" / "curves.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    case = sorted(os.listdir(small_cases))[0]
    r = run_cli("segment", "--case", os.path.join(small_cases, case), "--model", str(bundle),
                "-o", str(tmp_path / "pred.nii.gz"), "--quiet")
    assert r.returncode == 0, r.stderr
    assert sitk.ReadImage(str(tmp_path / "pred.nii.gz")).GetSize() == (80, 80, 52)


@pytest.fixture(scope="module")
def small_bundle(small_cases, tmp_path_factory):
    run = tmp_path_factory.mktemp("source_run")
    cfg = TrainConfig(network="resunet", options=SMALL["resunet"], epochs=1, iters_per_epoch=2, batch=1,
                      patch=(32, 32, 32), seed=2)
    return train(cfg, find_cases(small_cases), [], str(run), log=lambda *a: None)


def test_finetune_from_a_bundle_with_frozen_encoder_and_replay(small_cases, small_bundle, tmp_path):
    from BrainTumorSegLib.models import bundles

    src = bundles.load(small_bundle)
    new = tmp_path / "new"
    shutil.copytree(os.path.join(small_cases, sorted(os.listdir(small_cases))[0]),
                    new / sorted(os.listdir(small_cases))[0])
    r = run_cli("finetune", "--from", small_bundle, "--data", str(new), "--replay", small_cases,
                "--out", str(tmp_path / "ft"), "--epochs", "1", "--iters", "3", "--batch", "1",
                "--freeze-encoder", "--amp")
    assert r.returncode == 0, r.stderr
    out = bundles.load(str(tmp_path / "ft" / "model"))
    m = out.manifest.to_json()
    assert m["finetuned_from"] == {"id": src.id, "weights_sha256": src.manifest.weights_sha256}
    assert m["training"]["data"]["train"] == os.listdir(new)
    assert len(m["training"]["data"]["replay"]) == 2
    cfg = m["training"]["config"]
    assert cfg["lr"] == pytest.approx(build("resunet").training_defaults.lr * 0.1) and cfg["freeze_encoder"]
    assert cfg["options"] == SMALL["resunet"] and list(cfg["patch"]) == [32, 32, 32]  # from the bundle
    before, after = src.network.state_dict(), out.network.state_dict()
    enc = {n for n, p in out.network.named_parameters()
           if any(p is q for q in out.network.encoder_parameters())}
    assert enc and all(torch.equal(before[n], after[n]) for n in enc)
    assert any(not torch.equal(before[n], after[n]) for n in before if n not in enc and n.startswith("head"))
    import csv

    losses = [float(row["train_loss"]) for row in csv.DictReader(open(tmp_path / "ft" / "log.csv"))]
    assert losses and all(np.isfinite(losses))
    r = run_cli("finetune", "--from", str(tmp_path / "nothing"), "--data", str(new), "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "nothing" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_two_process_gloo_run_ends_with_identical_weights_on_both_ranks(small_cases, tmp_path):
    """torchrun with two CPU processes: DistributedDataParallel keeps the ranks in step, although each
    rank draws different patches and dropout seeds (without the all-reduce their weights would part);
    rank 0 keeps the average of the epoch ends (--average-from) and exports it."""
    import subprocess
    import sys

    from BrainTumorSegLib.models import bundles
    from BrainTumorSegLib.training import weights_digest

    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "BrainTumorSegLib", "train", "--data", small_cases, "--out", str(run), "--epochs", "2",
           "--iters", "2", "--batch", "1", "--patch", "32", "32", "32", "--device", "cpu",
           "--options", json.dumps(SMALL["resunet"]), "--schedule", "constant", "--average-from", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    d = json.load(open(run / "distributed.json"))
    assert d["world_size"] == 2 and d["backend"] == "gloo"
    a, b = d["weights_sha256_per_rank"]
    assert a == b
    exported = bundles.load(str(run / "model"))
    last = torch.load(run / "checkpoint_last.pt", weights_only=True)
    assert last["averaged"] == 2
    net = build("resunet", **SMALL["resunet"])
    net.load_state_dict(last["model"])
    assert weights_digest(net) == a  # the ranks' weights at the end: what the average's last snapshot was
    net.load_state_dict(last["average"])
    assert weights_digest(exported.network) == weights_digest(net) != a  # the bundle holds the average
    assert exported.manifest.to_json()["training"]["world_size"] == 2
    assert r.stdout.count("model bundle:") == 2  # both ranks finish; rank 0 alone wrote the log
    assert len(open(run / "log.csv").read().splitlines()) == 3


def test_a_two_process_run_leaves_its_process_group_before_the_interpreter_exits(small_cases, tmp_path):
    """``train`` under torchrun returns with the DistributedDataParallel wrapper freed and the group
    destroyed, even with the garbage collector off (as during the interpreter's exit): a wrapper
    left to the exit held the group, and 1 of 8 two-process runs here aborted after it had
    finished ('terminate called without an active exception')."""
    import subprocess
    import sys

    probe = tmp_path / "probe.py"
    probe.write_text(f"""
import gc, json, os, torch
from BrainTumorSegLib.read.cases import find_cases
from BrainTumorSegLib.training import TrainConfig, train
gc.disable()
cfg = TrainConfig(network="resunet", options={SMALL['resunet']!r}, epochs=1, iters_per_epoch=1, batch=1,
                  patch=(32, 32, 32), device="cpu")
rank = int(os.environ["RANK"])
train(cfg, find_cases({small_cases!r}), [], {str(tmp_path / "run")!r}, log=lambda *a: None)
alive = sum(isinstance(o, torch.nn.parallel.DistributedDataParallel) for o in gc.get_objects())
print("probe", json.dumps([rank, alive, torch.distributed.is_initialized()]))
""")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(probe)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=os.path.dirname(os.path.dirname(
        os.path.dirname(os.path.abspath(__file__)))))
    assert r.returncode == 0, r.stderr[-3000:]
    seen = sorted(json.loads(line.split(" ", 1)[1]) for line in r.stdout.splitlines() if line.startswith("probe "))
    assert seen == [[0, 0, False], [1, 0, False]]  # both ranks: no wrapper alive, no group


def test_finetune_keeps_the_bundles_working_spacing_and_the_callers_config(small_cases, small_bundle, tmp_path):
    """A model trained on a 2 mm working grid is fine-tuned on that grid (its manifest says so), and
    the caller's TrainConfig is left as it was."""
    from BrainTumorSegLib.models import bundles
    from BrainTumorSegLib.training import TrainConfig, finetune

    src = bundles.load(small_bundle)
    doc = src.manifest.to_json()
    coarse = dict(doc, id="coarse", preprocessing={**doc.get("preprocessing", {}), "spacing_mm": 3.0})
    coarse.pop("weights_sha256")
    coarse_dir = bundles.save(src.network, tmp_path / "coarse", coarse)
    mine = TrainConfig(epochs=1, iters_per_epoch=1, batch=1)
    kept = TrainConfig(epochs=1, iters_per_epoch=1, batch=1)
    cases = find_cases(small_cases)
    out = finetune(coarse_dir, cases[:1], [], str(tmp_path / "ft"), mine, log=lambda *a: None)
    assert mine == kept
    m = bundles.read_manifest(out).to_json()
    assert m["preprocessing"]["spacing_mm"] == 3.0 and m["training"]["config"]["spacing"] == 3.0
    cached = [f for f in os.listdir(tmp_path / "ft" / "cache") if f.endswith(".npz")]
    with np.load(tmp_path / "ft" / "cache" / cached[0]) as z:
        assert tuple(z["spacing"]) == (3.0, 3.0, 3.0)


def test_training_progress_goes_to_the_callers_callback(small_cases, tmp_path, capsys):
    """As segment() does: progress("training", fraction) after every iteration, rising to 1; nothing printed."""
    seen = []
    cfg = TrainConfig(network="resunet", options=SMALL["resunet"], epochs=2, iters_per_epoch=3, batch=1,
                      patch=(32, 32, 32), seed=4)
    train(cfg, find_cases(small_cases), [], str(tmp_path / "run"), log=lambda *a: None,
          progress=lambda stage, f: seen.append((stage, f)))
    assert [s for s, _ in seen] == ["training"] * 6
    assert [round(f, 3) for _, f in seen] == [round(k / 6, 3) for k in range(1, 7)]
    assert capsys.readouterr().err == ""


def test_tumor_patches_centre_on_each_class_alike():
    """A case whose enhancing tumor is 0.1 % of its tumor: class-balanced centres put it in view in
    about a third of the tumor-centred patches (voxel-uniform centres would almost never)."""
    classes = np.zeros((40, 80, 80), np.uint8)
    classes[5:35, 5:75, 5:75] = 2      # a large edema
    classes[18:22, 60:64, 60:64] = 3   # a tiny enhancing spot
    fg = np.argwhere(classes > 0)
    case = CachedCase.__new__(CachedCase)
    case.__dict__.update(data=np.zeros((4,) + classes.shape, np.float16), classes=classes, fg=fg.astype(np.int32),
                         fg_class=classes[tuple(fg.T)], spacing=(2.0, 2.0, 2.0), case_id="x")
    rng = np.random.default_rng(0)
    seen = sum(int((sample_patch(case, (8, 8, 8), rng, 1.0)[1] == 3).any()) for _ in range(300))
    assert 60 <= seen <= 200, seen


def test_partial_coverage_zeroes_one_sequence_outside_a_slab():
    x = np.ones((4, 16, 20, 24), np.float32)
    out = cover_partially(x.copy(), 2, np.random.default_rng(4))
    assert np.array_equal(out[[0, 1, 3]], x[[0, 1, 3]])
    kept = out[2] > 0
    assert 0.25 < kept.mean() < 0.85
    # the kept part is one slab: along some axis every plane is either all kept or all zeroed
    others = [tuple(a for a in range(3) if a != ax) for ax in range(3)]
    assert any(np.all(kept.all(axis=o) | ~kept.any(axis=o)) for o in others)


def test_rotation_about_every_axis_scaling_and_elastic_move_labels_with_the_sequences():
    """The nnU-Net set's spatial step, forced on: a sphere off centre moves out of its place along
    every axis (not only in the standard set's one plane), and the labels move with the sequences."""
    zz, yy, xx = np.meshgrid(*[np.arange(32)] * 3, indexing="ij")
    y = (((zz - 12) ** 2 + (yy - 14) ** 2 + (xx - 19) ** 2) < 49).astype(np.uint8) * 2
    x = np.repeat((y > 0).astype(np.float32)[None], 4, 0)
    forced = Augmentation(rotate_p=1.0, all_axes=True, max_angle=0.5, scale=(0.8, 1.2), scale_p=1.0, elastic_p=1.0)
    moved_along = np.zeros(3, bool)
    for seed in range(6):
        xo, yo = _spatial(x.copy(), y.copy(), np.random.default_rng(seed), forced)
        assert set(np.unique(yo)) <= {0, 2}
        assert ((xo[0] > 0.5) == (yo > 0)).mean() > 0.98  # labels where the sequences put the tumor
        centre, centre0 = np.argwhere(yo > 0).mean(0), np.argwhere(y > 0).mean(0)
        moved_along |= np.abs(centre - centre0) > 1.0
    assert moved_along.all(), moved_along
    assert AUGMENTATIONS["nnunet"].all_axes and AUGMENTATIONS["nnunet"].elastic_p > 0
    assert not AUGMENTATIONS["standard"].all_axes


def test_augmentation_set_is_chosen_by_name(small_cases, tmp_path):
    files = [cache_case(c, str(tmp_path)) for c in find_cases(small_cases)]
    standard = PatchDataset(files, (32, 32, 32), 8, seed=0, fg_fraction=0.5, domain_randomization=False)
    nnunet = PatchDataset(files, (32, 32, 32), 8, seed=0, fg_fraction=0.5, domain_randomization=False,
                          augmentation="nnunet")
    assert any(not torch.equal(standard[i][0], nnunet[i][0]) for i in range(8))
    with pytest.raises(InputError, match="unknown augmentation 'heavy'"):
        PatchDataset(files, (32, 32, 32), 1, seed=0, fg_fraction=0.5, domain_randomization=False, augmentation="heavy")
    r = cli_main("train", "--data", str(small_cases), "--out", str(tmp_path / "run"), "--augmentation", "heavy")
    assert r.returncode == 2 and "unknown augmentation 'heavy'; choose one of standard, nnunet" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()  # fails before caching


def nested_tumor(size: int, *layers) -> np.ndarray:
    """A label cube of ``size`` voxels a side holding nested cubes: each layer (class, start, stop)
    drawn over the ones before it, e.g. edema, then enhancing tumor, then necrosis."""
    y = np.zeros((size,) * 3, np.uint8)
    for cls, start, stop in layers:
        y[start:stop, start:stop, start:stop] = cls
    return y


def test_a_patch_without_enhancement_has_t1_where_t1ce_enhanced_and_a_non_enhancing_core():
    """remove_enhancement: inside the enhancing tumor the T1ce takes the T1's values (shifted by the
    difference of their medians outside the tumor) and the class becomes non-enhancing core; every
    other voxel and sequence is unchanged, and so is a patch without enhancing tumor or without T1."""
    rng = np.random.default_rng(0)
    y = nested_tumor(16, (2, 3, 13), (3, 5, 11), (1, 7, 9))
    x = rng.normal(0, 1, (4,) + y.shape).astype(np.float32)
    x[1] += 0.5              # the T1ce brighter than the T1 outside the tumor, by about 0.5
    x[1][y == 3] += 3.0      # and enhancing
    xo, yo = remove_enhancement(x, y, 0, 1)
    et = y == 3
    assert not (yo == 3).any() and np.array_equal(yo == 1, (y == 1) | et) and np.array_equal(yo[~et], y[~et])
    shift = xo[1][et] - x[0][et]
    assert np.allclose(shift, shift[0]) and abs(shift[0] - 0.5) < 0.1
    assert np.array_equal(xo[1][~et], x[1][~et]) and np.array_equal(xo[[0, 2, 3]], x[[0, 2, 3]])
    assert x[1][et].mean() > 3.0  # the input is untouched
    for xi, yi in ((x, np.where(et, 2, y).astype(np.uint8)), (np.concatenate([0 * x[:1], x[1:]]), y)):
        xs, ys = remove_enhancement(xi, yi, 0, 1)
        assert xs is xi and ys is yi


def test_a_fluid_filled_core_takes_the_cases_own_fluid_and_keeps_its_labels():
    """fluid_intensity finds the case's fluid (bright T2, dark FLAIR, outside the tumor);
    fill_with_fluid gives the core that intensity (give or take a cyst's protein and noise), leaves
    the labels and everything a few voxels from the core as they were, and leaves alone a patch
    with a core too small or a case without fluid."""
    rng = np.random.default_rng(1)
    y = nested_tumor(24, (2, 4, 20), (1, 7, 17))
    x = rng.normal(0, 0.3, (4,) + y.shape).astype(np.float32)
    x[:, y == 1] += np.array([0.0, 0.0, 1.5, 1.5], np.float32)[:, None]  # a necrosis bright on T2 and FLAIR
    x[:, 22:, :3, :] = np.array([-1.5, -1.5, 3.0, -2.0], np.float32)[:, None, None, None]  # fluid outside the tumor
    fluid = fluid_intensity(x, y, 2, 3)
    assert fluid is not None and np.allclose(fluid, [-1.5, -1.5, 3.0, -2.0], atol=0.05)
    inner = np.zeros(y.shape, bool)
    inner[8:16, 8:16, 8:16] = True
    means = []
    for seed in range(6):
        xo, yo = fill_with_fluid(x, y, fluid, np.random.default_rng(seed))
        assert yo is y and not np.shares_memory(xo, x)
        means.append(xo[:, inner].mean(1))
        assert np.array_equal(xo[:, y == 0][:, :100], x[:, y == 0][:, :100])  # the slab of fluid, far from the core
        assert np.array_equal(xo[:, :3], x[:, :3])
    assert np.allclose(np.mean(means, 0), fluid, atol=0.25) and np.std(means, 0).max() > 0.01  # drawn per patch
    small = np.where(y == 1, 2, y).astype(np.uint8)
    small[10:13, 10:13, 10:13] = 1  # 27 voxels
    for xi, yi, fl in ((x, small, fluid), (x, y, None)):
        xs, ys = fill_with_fluid(xi, yi, fl, np.random.default_rng(0))
        assert xs is xi and ys is yi
    assert fluid_intensity(np.concatenate([x[:3], 0 * x[3:]]), y, 2, 3) is None  # FLAIR missing


def test_the_share_of_fluid_filled_cores_reaches_the_patches_and_is_checked(small_cases, tmp_path):
    """On the phantoms (necroses brighter than the brain on FLAIR), every patch with a core shows it
    dark on FLAIR when asked to; none does otherwise. A share outside 0-1 is one line, exit 2."""
    files = [cache_case(c, str(tmp_path)) for c in find_cases(small_cases)]
    kw = dict(patch=(32, 32, 32), batches=16, seed=0, fg_fraction=1.0, domain_randomization=False)
    flair = SEQUENCES.index("flair")

    def core_flair(ds):
        return [float(x[flair][y == 1].mean()) for x, y in (ds[i] for i in range(16)) if int((y == 1).sum()) >= 200]

    plain, always = core_flair(PatchDataset(files, **kw)), core_flair(PatchDataset(files, **kw, fluid_cores=1.0))
    assert len(plain) >= 4 and len(always) >= 4
    assert np.mean(plain) > 0.5 and max(always) < min(plain) and np.mean(always) < -1.0
    # a fluid-filled core's wall loses its enhancement with the share asked for, here always
    walls = PatchDataset(files, **kw, fluid_cores=1.0, fluid_without_enhancement=1.0)
    assert not any((walls[i][1] == 3).any() for i in range(16))
    r = cli_main("train", "--data", str(small_cases), "--out", str(tmp_path / "run"), "--fluid-cores", "-0.1")
    assert r.returncode == 2 and "--fluid-cores -0.1: a share of patches, from 0 to 1" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_a_solid_core_is_darker_than_its_edema_on_t1_does_not_enhance_and_is_non_enhancing_core():
    """make_core_solid turns a high-grade core (necrosis bright on T2 and FLAIR, an enhancing rim)
    into a low-grade one: darker than the case's edema on T1 and T1ce, near it on FLAIR, no
    enhancement, all labelled non-enhancing core; the edema and everything a few voxels from the
    core stay as they were, a missing sequence stays missing, and a patch with a core too small or a
    case without edema comes back as it is."""
    rng = np.random.default_rng(2)
    y = nested_tumor(24, (2, 3, 21), (3, 7, 17), (1, 9, 15))
    x = rng.normal(0, 0.2, (4,) + y.shape).astype(np.float32)
    x[:, y == 2] += np.array([0.4, 0.2, 1.0, 1.8], np.float32)[:, None]  # edema
    x[:, y == 3] += np.array([0.9, 2.5, 1.2, 2.0], np.float32)[:, None]  # an enhancing rim, brighter than edema on T1
    x[:, y == 1] += np.array([0.8, 0.6, 3.0, 3.5], np.float32)[:, None]  # necrosis, bright on T2 and FLAIR
    edema = edema_intensity(x, y)
    assert edema is not None and np.allclose(edema, [0.4, 0.2, 1.0, 1.8], atol=0.05)
    core = (y == 1) | (y == 3)
    inner = np.zeros(y.shape, bool)
    inner[8:16, 8:16, 8:16] = True
    means = []
    for seed in range(8):
        xo, yo = make_core_solid(x, y, edema, np.random.default_rng(seed), 0, 1, 2, 3)
        assert not np.shares_memory(xo, x) and x[1][y == 3].mean() > 2.3  # the input is untouched
        assert np.array_equal(yo, np.where(core, 1, y)) and not (yo == 3).any()
        m = xo[:, inner].mean(1)
        means.append(m)
        assert m[0] < edema[0] - 0.1 and m[1] < edema[1] - 0.1  # darker on T1 (it was brighter), T1ce not enhancing
        assert edema[2] - 0.4 < m[2] < edema[2] + 1.5  # near or above the edema on T2, not 2 above it
        assert edema[3] - 1.0 < m[3] < edema[3] + 0.8  # near the edema on FLAIR, not 1.7 above it
        assert np.array_equal(xo[:, :2], x[:, :2]) and np.array_equal(xo[:, y == 2][:, :50], x[:, y == 2][:, :50])
    assert np.std(means, 0).min() > 0.01  # drawn per patch
    missing = np.concatenate([x[:3], 0 * x[3:]])
    assert not make_core_solid(missing, y, edema, np.random.default_rng(0), 0, 1, 2, 3)[0][3].any()
    guided = np.concatenate([x, np.full((3,) + y.shape, 0.5, np.float32)])  # a cascade's guide channels
    assert np.array_equal(make_core_solid(guided, y, np.concatenate([edema, [0, 0, 0]]), np.random.default_rng(0),
                                          0, 1, 2, 3)[0][4:], guided[4:])
    small = np.where(core, 2, y).astype(np.uint8)
    small[10:13, 10:13, 10:13] = 1  # 27 voxels
    for yi, ed in ((small, edema), (y, None)):
        xs, ys = make_core_solid(x, yi, ed, np.random.default_rng(0), 0, 1, 2, 3)
        assert xs is x and ys is yi
    assert edema_intensity(x, np.where(y == 2, 0, y).astype(np.uint8)) is None  # no edema


def test_the_share_of_solid_cores_reaches_the_patches_and_is_checked(small_cases, tmp_path):
    """Asked for always, no patch with a core of 50 voxels or more keeps enhancing tumor, and every
    core large enough is darker on T1 than the edema around it; otherwise patches with enhancing
    tumor are drawn. A share outside 0-1, or with fluid-filled cores too, is one line, exit 2."""
    files = [cache_case(c, str(tmp_path)) for c in find_cases(small_cases)]
    kw = dict(patch=(32, 32, 32), batches=16, seed=0, fg_fraction=1.0, domain_randomization=False)
    t1 = SEQUENCES.index("t1")
    plain = [PatchDataset(files, **kw)[i] for i in range(16)]
    always = [PatchDataset(files, **kw, solid_cores=1.0)[i] for i in range(16)]
    assert sum(int((y == 3).any()) for _, y in plain) >= 4
    assert not any((y == 3).any() for _, y in always if int(((y == 1) | (y == 3)).sum()) >= 50)
    both = [(x[t1], y) for x, y in always if int((y == 1).sum()) >= 200 and int((y == 2).sum()) >= 200]
    seen = [(v[(y == 1) & (v != 0)], v[(y == 2) & (v != 0)]) for v, y in both]  # a T1 dropped or cut: its zeros out
    seen = [(c, e) for c, e in seen if len(c) >= 100 and len(e) >= 100]
    assert len(seen) >= 4 and all(c.mean() < e.mean() - 0.2 for c, e in seen)
    for flags, message in ((["--solid-cores", "2"], "--solid-cores 2.0: a share of patches, from 0 to 1"),
                           (["--solid-cores", "0.2", "--fluid-cores", "0.2"], "one kind of core at a time")):
        r = cli_main("train", "--data", str(small_cases), "--out", str(tmp_path / "run"), *flags)
        assert r.returncode == 2 and message in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_a_carved_tumor_replaces_the_patch_within_its_reach_inside_both_brains():
    """carve_tumor copies the donor's tumor and what lies within the drawn reach of it (images and
    labels alike), shrinks the tumor for a reach below zero, leaves the patch's own tumor and
    everything farther away as it was, carves nothing outside either brain, and leaves a patch
    alone when the donor's tumor is too small."""
    rng = np.random.default_rng(3)
    spacing = (2.0, 2.0, 2.0)
    y = np.zeros((24, 24, 24), np.uint8)
    y[1:5, 1:5, 1:5] = 2  # the patch's own tumor, in a corner
    x = rng.normal(0, 0.3, (4,) + y.shape).astype(np.float32)
    x[:, :, :, 15:] = 0  # outside the patch's brain, through the donor's tumor
    donor_y = nested_tumor(24, (2, 8, 16), (1, 10, 14))
    donor_x = (rng.normal(0, 0.3, x.shape) + 5).astype(np.float32)
    tumor = (donor_y > 0) & x.any(0)
    near = np.zeros(y.shape, bool)
    near[6:8, 8:16, 8:15] = True  # 2-4 mm from the donor's tumor, straight along one axis
    interior = nested_tumor(24, (1, 9, 15)) > 0  # the donor's tumor less its outer voxel (2 mm)
    for reach in ((4.0, 4.0), (-2.0, -2.0)):
        xo, yo = carve_tumor(x, y, donor_x, donor_y, np.random.default_rng(0), spacing, reach)
        region = (xo == donor_x).all(0)
        assert np.array_equal(yo[region], donor_y[region]) and np.array_equal(xo[:, ~region], x[:, ~region])
        assert np.array_equal(yo[~region], y[~region]) and (yo[1:5, 1:5, 1:5] == 2).all()
        assert not region[:, :, 15:].any() and not region[6, 6, 6]  # outside the brain; 7 mm from the tumor
        if reach[0] > 0:
            assert region[tumor | near].all()
        else:
            assert np.array_equal(region, interior)
            assert (yo == 1).sum() == 4 ** 3 and (yo == 2).sum() == 4 ** 3 + 6 ** 3 - 4 ** 3
    tiny = np.zeros_like(donor_y)
    tiny[10:13, 10:13, 10:13] = 1  # 27 voxels
    xs, ys = carve_tumor(x, y, donor_x, tiny, np.random.default_rng(0), spacing)
    assert xs is x and ys is y


def test_a_carved_patch_takes_the_donors_tumor_to_the_same_place_of_the_other_brain(small_cases, tmp_path):
    """carve_patch puts the donor's patch where each crop's origin says it lies in the other case:
    a donor that is the case itself, cropped three, five and two voxels further on and its tumor
    marked, carves back the case's own labels and images (marked) at the case's own voxels. The
    share reaches the patches (each one then holds a donor's tumor) and is checked: outside 0-1,
    cases on two grids, a donor that is not a training case or donors without a share, one line
    and exit 2."""
    (tmp_path / "cache").mkdir()
    case = CachedCase(cache_case(find_cases(small_cases)[0], str(tmp_path / "cache")))
    shift = (3, 5, 2)
    cut = tuple(slice(s, None) for s in shift)
    donor = CachedCase.like(case, case.data[(slice(None),) + cut].copy())
    donor.classes = case.classes[cut]
    donor.data[0][donor.classes > 0] += 10.0
    donor.origin = tuple(o + s for o, s in zip(case.origin, shift))
    donor.fg = np.argwhere(donor.classes > 0).astype(np.int32)
    donor.fg_class = donor.classes[donor.classes > 0]
    patch = (24, 24, 24)
    for seed in range(4):
        rng = np.random.default_rng(seed)
        start = [int(c) - 12 for c in donor.fg[rng.integers(len(donor.fg))]]
        x, y = carve_patch(case, donor, start, patch, rng)
        own_x, own_y = crop_patch(case, [s + d for s, d in zip(start, shift)], patch)
        assert np.array_equal(y, own_y) and (y > 0).sum() >= 50
        marked = (y > 0) & (np.abs(x[0] - own_x[0] - 10.0) < 0.02)  # fp16: 10 more, to its precision
        assert marked.sum() >= 50 and np.array_equal(x[0][~marked], own_x[0][~marked])
        assert np.array_equal(x[1:], own_x[1:])
    files = [cache_case(c, str(tmp_path / "cache")) for c in find_cases(small_cases)]
    kw = dict(patch=(12, 12, 12), batches=16, seed=0, fg_fraction=0.0, domain_randomization=False)
    plain = PatchDataset(files[:1], **kw)
    carved = PatchDataset(files[:1], **kw, carved_tumors=1.0, donor_files=files[1:])
    assert sum(int((plain[i][1] > 0).sum() < 50) for i in range(16)) >= 4
    assert all(int((carved[i][1] > 0).sum()) >= 50 for i in range(16))
    r = cli_main("train", "--data", str(small_cases), "--out", str(tmp_path / "run"), "--carved-tumors", "1.5")
    assert r.returncode == 2 and "--carved-tumors 1.5: a share of patches, from 0 to 1" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
    other = tmp_path / "two_grids"
    shutil.copytree(small_cases, other)
    moved = find_cases(str(other))[1]
    regrid(moved, os.path.dirname(moved.paths["seg"]), (60, 60, 39), 4.0)
    r = cli_main("train", "--data", str(other), "--out", str(tmp_path / "run2"), "--carved-tumors", "0.5",
                 "--epochs", "1", "--iters", "1", "--val-every", "1")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "--carved-tumors needs every case on one grid" in r.stderr and moved.case_id in r.stderr
    r = cli_main("train", "--data", str(small_cases), "--out", str(tmp_path / "run3"), "--carved-tumors", "0.5",
                 "--carve-from", "BraTS_nobody", "--epochs", "1", "--iters", "1", "--val-every", "1")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "--carve-from BraTS_nobody: not among the training cases" in r.stderr and not (tmp_path / "run3").exists()
    r = cli_main("train", "--data", str(small_cases), "--out", str(tmp_path / "run4"), "--carve-from",
                 find_cases(small_cases)[0].case_id)
    assert r.returncode == 2 and "give that share too" in r.stderr and not (tmp_path / "run4").exists()


def test_the_share_without_enhancement_reaches_the_patches_and_is_checked(small_cases, tmp_path):
    files = [cache_case(c, str(tmp_path)) for c in find_cases(small_cases)]
    kw = dict(patch=(32, 32, 32), batches=24, seed=0, fg_fraction=1.0, domain_randomization=False)
    plain = [PatchDataset(files, **kw)[i][1] for i in range(24)]
    always = [PatchDataset(files, **kw, without_enhancement=1.0)[i][1] for i in range(24)]
    assert sum(int((y == 3).any()) for y in plain) >= 6
    assert not any((y == 3).any() for y in always)
    r = cli_main("train", "--data", str(small_cases), "--out", str(tmp_path / "run"), "--without-enhancement", "1.5")
    assert r.returncode == 2 and "--without-enhancement 1.5: a share of patches, from 0 to 1" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
