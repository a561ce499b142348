"""The coarse-to-fine cascade: stage 1 on the volume as a 2 mm preprocessing makes it, its
probabilities back on the 1 mm grid as stage 2's extra channels, stage 2 correcting them only
around the tumor; through ``segment``."""
import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from scipy import ndimage

from BrainTumorSegLib.errors import InputError
from BrainTumorSegLib.models import bundles
from BrainTumorSegLib.networks import build
from BrainTumorSegLib.networks.base import NOWHERE, box_around
from BrainTumorSegLib.pipeline import segment
from BrainTumorSegLib.preprocess.normalise import zscore
from BrainTumorSegLib.preprocess.transform import PreprocessOptions, preprocess
from BrainTumorSegLib.read.cases import find_cases
from BrainTumorSegLib.segment_options import SegmentOptions
from BrainTumorSegLib.training.config import TrainConfig
from BrainTumorSegLib.training.loop import train

SMALL = {"channels": [4, 8, 16, 32], "blocks": [1, 1, 1, 1]}


class FirstChannelsAsLogits(torch.nn.Module):
    """A stand-in stage 1 whose region logits are its first three input channels, scaled: what it
    'sees' is known voxel by voxel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 40 * (x[:, :3] - 0.5)


def _cascade(margin: int = 4, patch: int = 16):
    torch.manual_seed(0)
    net = build("coarse_to_fine", coarse=SMALL, fine=SMALL, margin=margin, patch=patch, coarse_window=16).eval()
    net.coarse = FirstChannelsAsLogits()
    return net


def test_the_guide_lies_on_the_fine_grid_and_the_box_holds_the_tumor():
    net = _cascade()
    vol = torch.zeros(4, 41, 46, 37)  # odd sizes: padded to whole 2 mm voxels, cropped back
    vol[3] = 1.0  # the brain
    vol[:3, 10:20, 12:24, 8:14] = 1.0  # a 'tumor' on 2 mm voxel boundaries
    guide = net.guide(vol)
    assert guide.shape == (3, 41, 46, 37)
    inside, outside = guide[0, 11:19, 13:23, 9:13], guide[0, 25:, 30:, 20:]
    assert inside.min() > 0.99 and outside.max() < 0.01
    x, box = net.prepare(vol)
    assert x.shape == (7, 41, 46, 37) and torch.equal(x[:4], vol) and torch.equal(x[4:], guide)
    assert box is not None
    for b, lo, hi, n in zip(box, (10, 12, 8), (20, 24, 14), vol.shape[1:]):
        assert b.start <= lo - 3 and b.stop >= hi + 3 and b.stop - b.start >= 16  # margin, and a patch at least
        assert b.stop - b.start < n  # but not the whole volume


def test_stage1_in_one_pass_runs_once_over_the_whole_volume():
    """``coarse_window=0``: stage 1 sees the whole 2 mm volume at once (a stage 1 trained on whole
    brains), the same probabilities as windows where the network looks voxel by voxel, and guides
    cached for training under another key."""
    windowed = _cascade()
    whole = build("coarse_to_fine", coarse=SMALL, fine=SMALL, margin=4, patch=16, coarse_window=0).eval()
    seen = []

    class Counting(FirstChannelsAsLogits):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(tuple(x.shape))
            return super().forward(x)

    whole.coarse = Counting()
    vol = torch.zeros(4, 70, 58, 81)  # more than one 16^3 window at 2 mm along every axis
    vol[3] = 1.0
    vol[:3, 20:40, 12:30, 30:50] = 1.0
    guide = whole.guide(vol)
    assert seen == [(1, 4, 35, 29, 41)]
    torch.testing.assert_close(guide, windowed.guide(vol))
    assert whole.guide_method != windowed.guide_method


def test_stage1_sees_the_volume_as_its_own_2mm_preprocessing_makes_it():
    """Resampled to 2 mm, then z-scored over the brain there (what a 2 mm model is given), not the
    z-scores of 1 mm averaged: the two differ most at the brain's edge."""
    g = torch.Generator().manual_seed(0)
    zz, yy, xx = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in (40, 44, 36)), indexing="ij")
    brain = ((zz - 20) / 16) ** 2 + ((yy - 22) / 19) ** 2 + ((xx - 18) / 15) ** 2 < 1
    raw = torch.stack([torch.rand(brain.shape, generator=g) * s + 0.01 for s in (100, 300, 50, 200)]) * brain
    raw[1] = 0  # a sequence not given: an empty channel
    raw[2, 25:] = 0  # one covering only part of the brain
    at_1mm = torch.from_numpy(np.stack([zscore(c.numpy(), brain.numpy()) for c in raw]))
    small = F.avg_pool3d(raw[None], 2)[0]  # linear resampling to the centres of 2 x 2 x 2 blocks
    expected = torch.from_numpy(np.stack([zscore(c.numpy(), (small != 0).any(0).numpy()) for c in small]))
    got = _cascade().coarse_volume(at_1mm)
    torch.testing.assert_close(got, expected, atol=0.01, rtol=0)
    assert (F.avg_pool3d(at_1mm[None], 2)[0] - expected).abs().max() > 0.5  # plain averaging would not do


def test_outside_the_box_the_cascade_gives_stage1s_probabilities(phantom_dir):
    """Stage 2 runs only around the tumor; elsewhere the cascade's probabilities are its stage 1's,
    not zero (they are averaged in ensembles and shown as uncertainty)."""
    net = _cascade(margin=2, patch=16)
    vol = torch.zeros(4, 48, 48, 48)
    vol[3] = 1.0
    vol[:3, 4:12, 4:12, 4:12] = 1.0
    x, box = net.prepare(vol)
    assert box is not None
    outside = torch.ones(48, 48, 48, dtype=torch.bool)
    outside[box] = False
    guide = x[4:]
    torch.testing.assert_close(net.outside_box(x)[:, outside], guide[:, outside])
    assert guide[:, outside].max() > 0  # stage 1's small probabilities, kept


def test_where_stage1_finds_nothing_stage2_looks_everywhere():
    net = _cascade()
    x, box = net.prepare(torch.zeros(4, 30, 30, 30))
    assert box is None and x.shape == (7, 30, 30, 30)


def test_stage1_stays_frozen_and_in_eval_mode():
    net = build("coarse_to_fine", coarse=SMALL, fine=SMALL)
    net.train()
    assert not net.coarse.training and net.fine.training
    assert not any(p.requires_grad for p in net.coarse.parameters())
    assert all(p.requires_grad for p in net.fine.parameters())


def test_the_cascade_starts_as_stage1s_own_labels_and_stage2_learns_corrections():
    torch.manual_seed(0)
    stage1 = build("resunet", **SMALL).eval()
    net = build("coarse_to_fine", coarse=SMALL, fine=SMALL).eval()
    net.start_from(stage1)
    x = torch.randn(1, 4, 32, 32, 32)
    guide = torch.rand(1, 3, 32, 32, 32)
    prior = torch.logit(guide.clamp(1e-4, 1 - 1e-4))
    with torch.no_grad():
        assert torch.equal(net.coarse(x), stage1(x))
        # zero heads: the output is stage 1's logits, whatever the sequences say
        torch.testing.assert_close(net(torch.cat([x, guide], 1)), prior)
        assert not torch.equal(net.fine.stem[0].weight, torch.zeros_like(net.fine.stem[0].weight))
    net.train()
    out = net(torch.cat([x, guide], 1))
    for d in out["deep_supervision"]:  # the coarser heads correct the guide averaged to their grid
        k = 32 // d.shape[-1]
        torch.testing.assert_close(d, torch.logit(F.avg_pool3d(guide, k).clamp(1e-4, 1 - 1e-4)))
    target = torch.zeros(1, 32, 32, 32, dtype=torch.long)
    net.loss(out, target, 0).backward()
    assert net.fine.head.weight.grad.abs().sum() > 0  # stage 2 learns from the first step


def test_a_cascade_bundle_segments_a_case_through_the_same_path(phantom_dir, tmp_path):
    torch.manual_seed(0)
    net = build("coarse_to_fine", coarse=SMALL, fine=SMALL, patch=32, coarse_window=32).eval()
    with torch.no_grad():
        net.coarse.head.bias.fill_(5.0)   # stage 1 sees tumor everywhere: stage 2 runs over the whole box
        net.fine.head.bias.fill_(-20.0)   # and stage 2 overrules it everywhere
    folder = bundles.save(net, str(tmp_path / "cascade"), {
        "id": "tiny-cascade", "version": "0", "network": "coarse_to_fine",
        "options": {"coarse": SMALL, "fine": SMALL, "patch": 32, "coarse_window": 32},
        "label_scheme": "brats2021", "patch_size": [32, 32, 32], "demo": True, "preprocessing": {"spacing_mm": 3.0}})
    case = find_cases(phantom_dir)[0]
    res = segment(case.sequences, folder, options=SegmentOptions(overlap=0.25))
    labels = sitk.GetArrayFromImage(res.labels)
    assert labels.shape == sitk.GetArrayFromImage(sitk.ReadImage(case.paths["t1ce"])).shape
    assert not labels.any()  # stage 2 corrects stage 1, here to nothing
    assert res.probabilities is not None and res.probabilities.shape[0] == 3
    assert res.probabilities.max() < 0.05


@pytest.mark.parametrize("bias, expected", [(5.0, True), (-5.0, False)])
def test_stage2_windows_see_stage1s_probabilities(bias, expected):
    """Stage 2 gets seven channels whose last three are stage 1's output, at every window."""
    torch.manual_seed(0)
    net = build("coarse_to_fine", coarse=SMALL, fine=SMALL, patch=16, coarse_window=16).eval()
    with torch.no_grad():
        net.coarse.head.bias.fill_(bias)
    seen = []
    net.fine.stem.register_forward_pre_hook(lambda m, args: seen.append(args[0][:, 4:].mean().item()))
    x, box = net.prepare(torch.randn(4, 24, 24, 24))
    with torch.no_grad():
        net(x[None])
    assert (box is not None) == expected and seen and (seen[0] > 0.5) == expected


@pytest.mark.parametrize("flag", ["without_enhancement", "fluid_cores", "solid_cores"])
def test_patches_are_not_changed_under_guide_channels_that_still_show_them_unchanged(phantom_dir, tmp_path, flag):
    """A cascade's guide channels carry stage 1's view of the unchanged images (its enhancing tumor,
    its core): patches relabelled as not enhancing, or with their core filled with fluid or made
    solid, would contradict them, so training refuses the pair before making anything."""
    cases = find_cases(phantom_dir)
    cfg = TrainConfig(network="coarse_to_fine", options={"coarse": SMALL, "fine": SMALL}, epochs=1, iters_per_epoch=1,
                      patch=(16, 16, 16), **{flag: 0.5})
    with pytest.raises(InputError, match=f"--{flag.replace('_', '-')} is for networks without guide channels"):
        train(cfg, cases[:1], cases[1:], str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def _et_cascade(patch: int = 16):
    torch.manual_seed(0)
    net = build("coarse_to_fine", coarse=SMALL, fine=SMALL, margin=2, patch=patch, coarse_window=16, refine="et").eval()
    net.coarse = FirstChannelsAsLogits()
    return net


def test_refining_the_enhancing_tumor_leaves_stage1s_whole_tumor_and_core_and_adds_only_next_to_its_et():
    """``refine="et"``: whatever stage 2 says, the whole tumor and the core are stage 1's; the enhancing
    tumor changes only within two voxels of stage 1's (the full cascade widened whole tumors and gave
    enhancing spots to tumors without any)."""
    net = _et_cascade()
    with torch.no_grad():
        net.fine.head.bias.copy_(torch.tensor([-30.0, 30.0, 30.0]))  # stage 2 says: no tumor, core and ET everywhere
    guide = torch.full((1, 3, 24, 24, 24), 1e-4)
    guide[:, :2, 4:20, 4:20, 4:20] = 0.9          # a tumor with a core
    guide[:, 2, 10:14, 10:14, 10:14] = 0.9        # and enhancing tumor in its middle
    x = torch.cat([torch.randn(1, 4, 24, 24, 24), guide], 1)
    with torch.no_grad():
        out = net(x)
    prior = torch.logit(guide.clamp(1e-4, 1 - 1e-4))
    torch.testing.assert_close(out[:, :2], prior[:, :2])
    et = out[0, 2] > 0
    assert et[8:16, 8:16, 8:16].all()             # grown by the two voxels stage 2 may add
    assert not et[:8].any() and not et[16:].any() and not et[:, :8].any() and not et[:, :, 16:].any()
    net.train()
    for d in net(x)["deep_supervision"]:          # the coarser heads: WT and TC stage 1's there too
        k = 24 // d.shape[-1]
        torch.testing.assert_close(d[:, :2], torch.logit(F.avg_pool3d(guide, k).clamp(1e-4, 1 - 1e-4))[:, :2])


def test_where_stage1_finds_no_enhancing_tumor_the_et_cascade_looks_nowhere(phantom_dir, tmp_path):
    """Stage 1 finds a tumor without enhancing tumor: no window runs (``NOWHERE``), and ``segment``
    gives stage 1's probabilities and labels, however stage 2 would overrule them."""
    net = _et_cascade()
    vol = torch.zeros(4, 48, 48, 48)
    vol[3] = 1.0
    vol[:2, 8:40, 8:40, 8:40] = 1.0  # whole tumor and core, no ET
    x, box = net.prepare(vol)
    assert box == NOWHERE and x.shape == (7, 48, 48, 48)
    vol[2, 22:26, 22:26, 22:26] = 1.0  # with ET: a box around it (reach, margin, a patch at least)
    x, box = net.prepare(vol)
    assert box is not None and box != NOWHERE
    assert all(b.start <= 22 - 2 and b.stop >= 26 + 2 and b.stop - b.start == 16 for b in box)  # not the tumor's 8:40

    torch.manual_seed(0)
    real = build("coarse_to_fine", coarse=SMALL, fine=SMALL, patch=32, coarse_window=32, refine="et").eval()
    with torch.no_grad():
        real.coarse.head.bias.copy_(torch.tensor([8.0, -8.0, -8.0]))  # stage 1: whole tumor everywhere, no ET
        real.fine.head.bias.fill_(40.0)                                # stage 2 would add ET everywhere
    folder = bundles.save(real, str(tmp_path / "et-cascade"), {
        "id": "tiny-et-cascade", "version": "0", "network": "coarse_to_fine",
        "options": {"coarse": SMALL, "fine": SMALL, "patch": 32, "coarse_window": 32, "refine": "et"},
        "label_scheme": "brats2021", "patch_size": [32, 32, 32], "demo": True, "preprocessing": {"spacing_mm": 3.0}})
    case = find_cases(phantom_dir)[0]
    res = segment(case.sequences, folder, options=SegmentOptions(overlap=0.25))
    labels = sitk.GetArrayFromImage(res.labels)
    assert (labels == 2).any() and not np.isin(labels, (1, 4)).any()  # edema only: stage 1's labels
    assert res.probabilities is not None and res.probabilities[2].max() < 0.01


def test_the_et_box_is_the_box_where_the_gate_lets_stage2_change_the_enhancing_tumor():
    """The box is found from stage 1's ET widened by the gate's reach, without pooling the whole
    1 mm volume: the same box as the gate's own, and the gate the cube's maximum."""
    net = _et_cascade()
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        guide = torch.rand(1, 3, 30, 34, 28, generator=g) * 0.5
        spots = [torch.randint(0, n, (2,), generator=g) for n in (30, 34, 28)]
        guide[0, 2, spots[0], spots[1], spots[2]] = 0.9  # two enhancing voxels, anywhere (edges too)
        cube = F.max_pool3d(guide[:, 2:3], 5, stride=1, padding=2)
        torch.testing.assert_close(net._et_gate(guide), cube, atol=0, rtol=0)
        vol = torch.zeros(4, 30, 34, 28)
        net.guide = lambda v, coarse=None, _g=guide: _g[0]
        _, box = net.prepare(vol)
        assert box == box_around(cube[0, 0] > 0.5, net.margin, net.patch_size)


def test_a_cascade_refines_all_regions_or_the_enhancing_tumor_nothing_else():
    with pytest.raises(ValueError, match="refine must be one of all, et"):
        build("coarse_to_fine", coarse=SMALL, fine=SMALL, refine="tc")


def test_stage1_inside_the_cascade_sees_the_2mm_grid_segment_gives_a_2mm_model(tmp_path):
    """``segment`` crops a cascade's 1 mm volume from an even voxel (``crop_multiple``), so the
    blocks stage 1 averages are the voxels of the 2 mm grid ``segment`` makes for a 2 mm model; a
    crop one voxel off would shift stage 1's grid by a millimetre (measured on a real case: WT Dice
    0.625 against 0.699)."""
    g = np.random.default_rng(0)
    zz, yy, xx = np.meshgrid(*(np.arange(n) for n in (47, 52, 45)), indexing="ij")
    brain = ((zz - 24) / 17) ** 2 + ((yy - 27) / 19) ** 2 + ((xx - 23) / 16) ** 2 < 1  # its box starts at odd voxels
    paths = {}
    for role, scale in zip(("t1", "t1ce", "t2", "flair"), (100, 300, 50, 200)):
        img = sitk.GetImageFromArray((g.random(brain.shape) * scale + 0.01).astype(np.float32) * brain)
        paths[role] = str(tmp_path / f"{role}.nii.gz")
        sitk.WriteImage(img, paths[role])
    net = _cascade()
    fine = preprocess(paths, PreprocessOptions(isotropic=1.0, crop_multiple=net.crop_multiple))
    coarse = preprocess(paths, PreprocessOptions(isotropic=2.0))
    assert net.crop_multiple == 2 and all(b.start % 2 == 0 for b in fine.inverse.bbox)
    assert any(b.start % 2 for b in preprocess(paths, PreprocessOptions(isotropic=1.0)).inverse.bbox)  # else odd
    seen = net.coarse_volume(torch.from_numpy(fine.data)).numpy()
    start = [f.start // 2 - c.start for f, c in zip(fine.inverse.bbox, coarse.inverse.bbox)]  # fine crop on the 2 mm grid
    common = tuple(slice(max(0, -s), min(n - s, m)) for s, n, m in zip(start, coarse.data.shape[1:], seen.shape[1:]))
    mine = seen[(slice(None),) + common]
    theirs = coarse.data[(slice(None),) + tuple(slice(c.start + s, c.stop + s) for c, s in zip(common, start))]
    inside = coarse.brain[tuple(slice(c.start + s, c.stop + s) for c, s in zip(common, start))]
    core = ndimage.binary_erosion(inside, iterations=1)  # at the edge the brain's lowest value stands for zero
    assert core.sum() > 1000
    np.testing.assert_allclose(mine[:, core], theirs[:, core], atol=0.05)
