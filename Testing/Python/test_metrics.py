import numpy as np
import pytest
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance
from scipy import ndimage
from scipy.spatial import cKDTree

from BrainTumorSegLib.evaluation.metrics import (
    HD95_EMPTY,
    case_metrics,
    dice,
    hd95,
    sensitivity,
    specificity,
    summarize,
    surface_distances,
)
from BrainTumorSegLib.labels import SCHEMES


def random_shape(rng, shape):
    """A random blobby mask: thresholded smooth noise, sometimes several components."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), rng.uniform(1.5, 3.0))
    return field > np.quantile(field, rng.uniform(0.7, 0.95))


SPACINGS = [(1.0, 1.0, 1.0), (5.5, 0.9, 0.9), (3.0, 0.5, 1.2)]


@pytest.mark.parametrize("seed", range(6))
def test_dice_and_hd95_match_monai_on_anisotropic_random_shapes(seed):
    rng = np.random.default_rng(seed)
    shape = (20, 34, 30)
    spacing = SPACINGS[seed % 3]
    a, b = random_shape(rng, shape), random_shape(rng, shape)
    ta = torch.from_numpy(a)[None, None].float()
    tb = torch.from_numpy(b)[None, None].float()
    monai_dice = compute_dice(ta, tb, include_background=True).item()
    monai_hd = compute_hausdorff_distance(ta, tb, include_background=True, percentile=95,
                                          spacing=list(spacing)).item()
    assert dice(a, b) == pytest.approx(monai_dice, abs=1e-6)
    assert hd95(a, b, spacing, "max") == pytest.approx(monai_hd, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_pooled_hd95_matches_brute_force(seed):
    rng = np.random.default_rng(100 + seed)
    spacing = SPACINGS[seed]
    a, b = random_shape(rng, (12, 20, 18)), random_shape(rng, (12, 20, 18))
    def surf(m):
        return m & ~ndimage.binary_erosion(m)
    pa = np.argwhere(surf(a)) * np.array(spacing)
    pb = np.argwhere(surf(b)) * np.array(spacing)
    d_ab = cKDTree(pb).query(pa)[0]
    d_ba = cKDTree(pa).query(pb)[0]
    assert hd95(a, b, spacing, "pooled") == pytest.approx(np.percentile(np.r_[d_ab, d_ba], 95), rel=1e-6)
    assert hd95(a, b, spacing, "max") == pytest.approx(max(np.percentile(d_ab, 95), np.percentile(d_ba, 95)), rel=1e-6)
    x, y = surface_distances(a, b, spacing)
    assert np.allclose(np.sort(x), np.sort(d_ab)) and np.allclose(np.sort(y), np.sort(d_ba))


def test_spacing_is_honoured():
    a = np.zeros((10, 10, 10), bool)
    b = np.zeros((10, 10, 10), bool)
    a[2:4, 2:8, 2:8] = True
    b[6:8, 2:8, 2:8] = True  # 4 voxels apart along axis 0
    assert hd95(a, b, (1, 1, 1)) == pytest.approx(4.0)
    assert hd95(a, b, (5, 1, 1)) == pytest.approx(20.0)


def test_empty_mask_conventions():
    z = np.zeros((5, 5, 5), bool)
    o = z.copy()
    o[2, 2, 2] = True
    assert dice(z, z) == 1.0 and hd95(z, z, (1, 1, 1)) == 0.0
    assert dice(o, z) == 0.0 and hd95(o, z, (1, 1, 1)) == HD95_EMPTY
    assert dice(z, o) == 0.0 and hd95(z, o, (1, 1, 1)) == HD95_EMPTY
    assert HD95_EMPTY == pytest.approx(np.sqrt(240 ** 2 + 240 ** 2 + 155 ** 2), abs=1e-4)
    assert sensitivity(z, z) == 1.0 and specificity(z, z) == 1.0
    assert sensitivity(z, o) == 0.0 and sensitivity(o, o) == 1.0
    assert specificity(o, z) == pytest.approx(124 / 125)


def test_case_metrics_across_schemes():
    ref = np.zeros((8, 8, 8), np.uint8)
    ref[2:6, 2:6, 2:6] = 2
    ref[3:5, 3:5, 3:5] = 4
    pred = np.where(ref == 4, 3, ref).astype(np.uint8)  # same segmentation, brats2023 labels
    m = case_metrics(pred, ref, (1, 1, 1), SCHEMES["brats2023"], SCHEMES["brats2021"])
    assert all(m[r]["dice"] == 1.0 and m[r]["hd95"] == 0.0 for r in ("WT", "TC", "ET"))
    assert m["WT"]["volume_ref_ml"] == pytest.approx(64 / 1000)
    s = summarize([m, m])
    assert s["ET"]["dice"] == {"mean": 1.0, "median": 1.0, "std": 0.0}
