"""CPU fp32 inference sends every 3-D convolution to oneDNN: the same logits, not torch's reference kernel."""
import pytest
import torch
import torch.nn.functional as F

from BrainTumorSegLib.networks import build
from BrainTumorSegLib.predict.onednn import onednn_convolutions

CPU = torch.device("cpu")
pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")


def conv_kernels(fn) -> set:
    with torch.profiler.profile() as prof:
        fn()
    return {e.key for e in prof.key_averages() if "conv" in e.key}


def test_a_network_forward_gives_the_same_logits_without_the_reference_kernel():
    torch.manual_seed(0)
    net = build("resunet").eval()
    x = torch.randn(1, 4, 32, 32, 32)  # batch 1, 4 channels: torch's own choice is its reference kernel
    with torch.inference_mode():
        plain = net(x)
        assert "aten::slow_conv3d_forward" in conv_kernels(lambda: net(x))
        with onednn_convolutions(CPU, None):
            routed = net(x)
            kernels = conv_kernels(lambda: net(x))
    assert "aten::slow_conv3d_forward" not in kernels and "aten::mkldnn_convolution" in kernels
    assert torch.allclose(routed, plain, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kw", [dict(stride=2, padding=1), dict(padding=(0, 1, 2)), dict(dilation=2, padding=2),
                                dict(groups=2, padding=1), dict(padding="same")])
def test_every_convolution_argument_is_kept(kw):
    torch.manual_seed(1)
    x, w, b = torch.randn(1, 4, 9, 10, 11), torch.randn(6, 4 // kw.get("groups", 1), 3, 3, 3), torch.randn(6)
    with torch.inference_mode():
        plain = F.conv3d(x, w, b, **kw)
        with onednn_convolutions(CPU, None):
            routed = F.conv3d(x, w, b, **kw)
    assert routed.shape == plain.shape and torch.allclose(routed, plain, atol=1e-4, rtol=1e-4)


def test_training_and_other_precisions_are_left_to_torch():
    torch.manual_seed(2)
    conv = torch.nn.Conv3d(4, 8, 3, padding=1)
    x = torch.randn(1, 4, 8, 8, 8)
    with onednn_convolutions(CPU, None):  # gradients needed: torch's own kernels, which have a backward
        conv(x).sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    for device, dtype in ((CPU, torch.bfloat16), (torch.device("cuda"), None)):
        with onednn_convolutions(device, dtype), torch.inference_mode():
            assert "aten::mkldnn_convolution" not in conv_kernels(lambda: conv(x))
