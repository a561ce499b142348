"""Each network overfits one synthetic case in a short CPU run: proof that it can learn.

The case is a real phantom, preprocessed (crop, z-score), downsampled to 2 mm and cropped to a
48^3 box around the tumor so that a few hundred steps fit in CI. Training stops once WT, TC and ET Dice (eval mode)
all exceed 0.9,
checked every 25 steps, and fails after 400 steps. AGSE-VNet is trained without
its dropout of 0.5 (dropout fights memorising one case by design); the others as built.
"""
import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from BrainTumorSegLib.evaluation.metrics import dice
from BrainTumorSegLib.labels import labels_to_classes, labels_to_regions
from BrainTumorSegLib.networks import build
from BrainTumorSegLib.networks.losses import sigmoid_dice_bce, softmax_dice_ce
from BrainTumorSegLib.preprocess.grid import labels_to_working
from BrainTumorSegLib.preprocess.transform import preprocess
from BrainTumorSegLib.read.cases import find_case

pytestmark = pytest.mark.slow
EDGE = 48
MAX_STEPS = 400


@pytest.fixture(scope="module")
def small_case(phantom_case_dir):
    case = find_case(phantom_case_dir)
    pre = preprocess(case.sequences)
    lab = labels_to_working(sitk.ReadImage(case.paths["seg"]), pre.inverse)
    x = F.avg_pool3d(torch.from_numpy(pre.data)[None], 2)[0]
    lab = lab[::2, ::2, ::2][: x.shape[1], : x.shape[2], : x.shape[3]]
    centre = np.argwhere(lab > 0).mean(0).astype(int)
    lo = [int(np.clip(c - EDGE // 2, 0, n - EDGE)) for c, n in zip(centre, lab.shape)]
    box = tuple(slice(a, a + EDGE) for a in lo)
    return x[(slice(None),) + box].contiguous(), lab[box]


def region_dice(pred_regions: np.ndarray, lab: np.ndarray):
    ref = labels_to_regions(lab, "brats2021")
    return [dice(pred_regions[i], ref[i]) for i in range(3)]


def to_regions(net, logits):
    if net.output_kind == "sigmoid":
        return (torch.sigmoid(logits) > 0.5).numpy()
    cls = logits.argmax(0).numpy()
    return np.stack([cls > 0, (cls == 1) | (cls == 3), cls == 3])


OPTIONS = {"agse_vnet": {"dropout": 0.0}, "dmda_unet": {"cube": EDGE}}


@pytest.mark.parametrize("name", ["resunet", "agse_vnet", "cga_unet", "dmda_unet"])
def test_network_overfits_one_case(name, small_case):
    torch.manual_seed(0)
    x, lab = small_case
    net = build(name, **OPTIONS.get(name, {}))
    classes = torch.from_numpy(labels_to_classes(lab, "brats2021")).long()[None]
    regions = torch.from_numpy(labels_to_regions(lab, "brats2021")).float()[None]
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    if name == "dmda_unet":  # stage 1 on the case's axial slices, as the cascade's first step
        opt1 = torch.optim.Adam(net.stage1.parameters(), lr=3e-3)
        slices, sl_classes = x.permute(1, 0, 2, 3), classes[0]
        for _ in range(60):
            opt1.zero_grad()
            softmax_dice_ce(net.stage1(slices), sl_classes).backward()
            opt1.step()
    d = [0.0]
    for step in range(1, MAX_STEPS + 1):
        net.train()
        opt.zero_grad()
        out = net(x[None])
        if net.output_kind == "sigmoid":
            loss = sigmoid_dice_bce(out["out"], regions)
        else:
            loss = softmax_dice_ce(out["out"], classes)
        if name == "cga_unet":  # attention map supervised by the down-sampled one-hot truth
            target = F.adaptive_avg_pool3d(F.one_hot(classes, 4).movedim(-1, 1).float(), out["attention"].shape[2:])
            loss = loss + F.mse_loss(out["attention"], target)
        loss.backward()
        opt.step()
        if step % 25 == 0:
            net.eval()
            with torch.no_grad():
                logits = net.predict(x)["logits"] if name == "dmda_unet" else net(x[None])[0]
            d = region_dice(to_regions(net, logits), lab)
            if min(d) > 0.9:
                break
    assert min(d) > 0.9, f"{name}: Dice WT/TC/ET {d} after {MAX_STEPS} steps"
