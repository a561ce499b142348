import threading

import numpy as np
import pytest
import torch

from BrainTumorSegLib.errors import Cancelled, InputError
from BrainTumorSegLib.networks import NETWORKS, build
from BrainTumorSegLib.networks.agse_vnet import box_sum
from BrainTumorSegLib.networks.flops import count_flops, count_parameters
from BrainTumorSegLib.predict.sliding_window import sliding_window, window_starts

NAMES = list(NETWORKS)


def _inputs(net) -> int:
    """Input channels of a network's windows: its sequences and any first stage's guide channels."""
    return len(net.in_sequences) + net.guide_channels


def test_registry_and_declarations():
    assert set(NAMES) == {"resunet", "agse_vnet", "cga_unet", "dmda_unet", "coarse_to_fine"}
    for name in NAMES:
        net = build(name)
        spec = net.spec()
        assert spec["in_sequences"] == ["t1", "t1ce", "t2", "flair"]
        assert spec["output_kind"] in ("softmax", "sigmoid")
        assert spec["out_channels"] == (4 if spec["output_kind"] == "softmax" else 3)
        assert len(spec["patch_size"]) == 3 and spec["paper"]
        module_doc = __import__(type(net).__module__, fromlist=["_"]).__doc__
        assert "Departures" in module_doc  # where it departs from its paper, stated
        # the paper it follows, cited so that a reader can find it (or said plainly that we cannot)
        assert "doi:" in module_doc or "LNCS" in module_doc or "could not be identified" in module_doc
    with pytest.raises(InputError, match="unknown network"):
        build("unet9000")
    with pytest.raises(InputError, match="bad options for network resunet"):
        build("resunet", colour="red")


@pytest.mark.parametrize("name", NAMES)
def test_forward_odd_sizes_and_declared_channels(name):
    torch.manual_seed(0)
    net = build(name).eval()
    x = torch.randn(2, _inputs(net), 37, 41, 29)
    with torch.no_grad():
        y = net(x)
    assert torch.is_tensor(y) and y.shape == (2, net.out_channels, 37, 41, 29)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", NAMES)
def test_eval_is_deterministic_and_train_returns_aux_outputs(name):
    torch.manual_seed(0)
    net = build(name).eval()
    x = torch.randn(1, _inputs(net), 32, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x), net(x))
    net.train()
    out = net(x)
    assert set(out) == {"out", *net.aux_outputs}


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    net = build(name).train()
    x = torch.randn(2, _inputs(net), 32, 32, 32)
    out = net(x)
    g = torch.Generator().manual_seed(1)
    loss = (out["out"] * torch.randn(out["out"].shape, generator=g)).sum()
    for key in net.aux_outputs:
        vals = out[key] if isinstance(out[key], list) else [out[key]]
        for v in vals:
            loss = loss + (v * torch.randn(v.shape, generator=g)).sum()
    loss.backward()
    trainable = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    missing = [n for n, p in trainable if p.grad is None or not torch.any(p.grad != 0)]
    assert trainable and not missing, missing


def test_cga_unet_counts_match_the_paper():
    net = build("cga_unet")
    shape = (1, 4, 128, 128, 128)
    params = count_parameters(net)
    flops = count_flops(net, shape)
    assert abs(params / 4.77e6 - 1) < 0.15, params
    assert abs(flops / 151.12e9 - 1) < 0.15, flops
    sam_flops = count_flops(net, shape, within=net.att_path) + count_flops(net, shape, within=net.sam)
    assert abs(sam_flops / 0.675e9 - 1) < 0.15, sam_flops
    # SAM parameters: Table 1's path (4->16->16->4, 3x3x3 convs with bias); the paper's 0.095 M
    # cannot coexist with its 0.675 G FLOPs (see the module docstring).
    sam_params = count_parameters(net.att_path) + count_parameters(net.sam)
    assert sam_params == 27 * (4 * 16 + 16 * 16 + 16 * 4) + 16 + 16 + 4


def test_box_sum_equals_clipped_window_sum_for_any_radius():
    x = torch.rand(1, 2, 5, 6, 7, dtype=torch.float64)
    for r in (0, 1, 2, 16):
        got = box_sum(x, r)
        ref = torch.zeros_like(x)
        for z, y, w in np.ndindex(5, 6, 7):
            window = (Ellipsis, slice(max(0, z - r), z + r + 1), slice(max(0, y - r), y + r + 1),
                      slice(max(0, w - r), w + r + 1))
            ref[..., z, y, w] = x[window].sum((-3, -2, -1))
        assert torch.allclose(got, ref)


@pytest.mark.parametrize("name", NAMES)
def test_gradient_checkpointing_gives_the_same_gradients(name):
    torch.manual_seed(0)
    net = build(name).train()
    x = torch.randn(1, _inputs(net), 32, 32, 32)

    def grads():
        torch.manual_seed(1)  # same dropout masks in both passes
        net.zero_grad()
        out = net(x)
        loss = sum((v.float() ** 2).mean() for k, v in out.items() if torch.is_tensor(v))
        loss.backward()
        return {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}

    plain = grads()
    assert net.enable_gradient_checkpointing() > 0
    ckpt = grads()
    assert plain.keys() == ckpt.keys()
    for n in plain:
        torch.testing.assert_close(ckpt[n], plain[n], rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize("name", NAMES)
def test_encoder_is_a_proper_part_of_the_network(name):
    net = build(name)
    enc = {id(p) for p in net.encoder_parameters()}
    every = {id(p) for p in net.parameters()}
    assert enc and enc < every  # non-empty, and the decoder/head stay trainable


def _force_stage1(net, tumor: bool):
    """Set stage 1's output bias so that it sees (or misses) tumor everywhere."""
    with torch.no_grad():
        net.stage1.head.weight.zero_()
        net.stage1.head.bias.copy_(torch.tensor([0.0, 0.0, 50.0, 0.0] if tumor else [50.0, 0.0, 0.0, 0.0]))


def test_dmda_cascade_when_stage1_finds_nothing():
    torch.manual_seed(0)
    net = build("dmda_unet", cube=32).eval()
    _force_stage1(net, tumor=False)
    vol = torch.randn(4, 40, 48, 36)
    res = net.predict(vol)
    assert res["found_by_stage1"] is False
    assert res["region"] == [(0, 40), (0, 48), (0, 36)]  # stage 2 still looks everywhere
    assert res["logits"].shape == (3, 40, 48, 36) and torch.isfinite(res["logits"]).all()


def test_dmda_cascade_when_tumor_is_larger_than_the_cube():
    torch.manual_seed(0)
    net = build("dmda_unet", cube=32).eval()
    _force_stage1(net, tumor=True)
    vol = torch.randn(4, 70, 64, 50)
    res = net.predict(vol)
    assert res["found_by_stage1"] is True
    assert res["region"] == [(0, 70), (0, 64), (0, 50)]  # tiled with several cubes
    direct = sliding_window(vol, lambda b: net.stage2(b), (32, 32, 32), 3, 0.5)
    assert torch.allclose(res["logits"], direct)


def test_dmda_roi_centres_a_cube_on_a_small_tumor():
    net = build("dmda_unet", cube=32, margin=2)
    mask = torch.zeros(80, 90, 70, dtype=torch.bool)
    mask[60:64, 5:9, 30:33] = True
    box = net.roi(mask)
    assert [b.stop - b.start for b in box] == [32, 32, 32]
    assert all(b.start <= lo and hi <= b.stop for b, lo, hi in zip(box, (60, 5, 30), (64, 9, 33)))


def test_sliding_window_reconstructs_and_pads():
    vol = torch.randn(2, 23, 40, 31)
    out = sliding_window(vol, lambda b: b * 2, (16, 16, 16), 2, overlap=0.5, batch_size=3)
    assert torch.allclose(out, vol * 2, atol=1e-5)
    small = torch.randn(1, 5, 6, 7)
    assert torch.allclose(sliding_window(small, lambda b: b, (16, 16, 16), 1), small, atol=1e-6)
    assert window_starts(100, 32, 0.5)[0] == 0 and window_starts(100, 32, 0.5)[-1] == 68
    assert window_starts(20, 32, 0.5) == [0]


def test_sliding_window_cancel_stops_within_one_window():
    calls = []
    stop = threading.Event()

    def pred(b):
        calls.append(1)
        stop.set()
        return b

    with pytest.raises(Cancelled):
        sliding_window(torch.randn(1, 64, 64, 64), pred, (16, 16, 16), 1, cancel=stop)
    assert len(calls) == 1
