"""The OpenVINO backend (the ``openvino`` extra): same labels as torch fp32, cached export, the
``auto`` decision measured once and recorded. Marked slow: CI installs openvino for that step."""
import json
import os
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from BrainTumorSegLib.errors import InputError
from BrainTumorSegLib.models import bundles
from BrainTumorSegLib.networks import build
from BrainTumorSegLib.pipeline import segment
from BrainTumorSegLib.predict import backends
from BrainTumorSegLib.read.cases import find_case
from BrainTumorSegLib.segment_options import SegmentOptions

TINY = {"channels": [4, 8, 16, 32, 32], "blocks": [1, 1, 1, 1, 1]}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAINTUMORSEG_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "openvino"


def tiny_bundle(folder, case):
    """Random weights with the output bias set so that about half the brain is labelled."""
    from BrainTumorSegLib.preprocess.transform import preprocess

    torch.manual_seed(0)
    net = build("resunet", **TINY).eval()
    data = torch.from_numpy(preprocess(case.sequences).data[:, ::2, ::2, ::2].copy())[None]
    with torch.no_grad():
        net.head.bias -= net(data)[0].flatten(1).median(1).values
    return bundles.save(net, folder, {"id": "tiny", "network": "resunet", "options": TINY,
                                      "label_scheme": "brats2021", "patch_size": [64, 64, 64]})


def test_a_missing_openvino_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if the openvino extra were not installed
    net = build("resunet", **TINY)
    with pytest.raises(InputError, match=r'pip install "BrainTumorSegLib\[openvino\]"'):
        backends.choose("openvino", torch.device("cpu"), net, "0" * 64, (1, 4, 32, 32, 32), net)
    assert backends.choose("auto", torch.device("cpu"), net, "0" * 64, (1, 4, 32, 32, 32), net)[0] == "torch"


def test_an_exported_graph_is_keyed_by_the_networks_code_as_well_as_its_weights(tmp_path, monkeypatch):
    """Same weights under other code (a cascade whose forward changed) must not reuse an old graph."""
    import BrainTumorSegLib.networks.resunet as resunet

    net = build("resunet", **TINY)
    before = backends._code_digest(net)
    assert before != backends._code_digest(build("coarse_to_fine"))  # its own file counts too
    edited = tmp_path / "resunet.py"
    edited.write_text(open(resunet.__file__, encoding="utf-8").read() + "\n# edited\n", encoding="utf-8")
    real = backends.inspect.getsourcefile
    monkeypatch.setattr(backends.inspect, "getsourcefile",
                        lambda obj: str(edited) if real(obj) == resunet.__file__ else real(obj))
    after = backends._code_digest(net)
    assert after != before
    edited.write_text(edited.read_text(encoding="utf-8") + "# edited again\n", encoding="utf-8")
    assert backends._code_digest(net) != after  # the same file changed: read again, not the cached digest


@pytest.mark.slow
def test_openvino_gives_the_labels_of_torch_fp32(phantom_case_dir, tmp_path, cache):
    import openvino  # noqa: F401 - fails loudly, never skips, when it is missing

    case = find_case(phantom_case_dir)
    b = bundles.load(tiny_bundle(tmp_path / "tiny", case))
    ref = segment(case.sequences, b, "cpu", SegmentOptions(backend="torch", precision="fp32"))
    ov = segment(case.sequences, b, "cpu", SegmentOptions(backend="openvino"))
    assert ref.backend == "torch" and ov.backend == "openvino" and ov.report()["backend"] == "openvino"
    a, c = sitk.GetArrayFromImage(ref.labels), sitk.GetArrayFromImage(ov.labels)
    assert (a > 0).sum() > 10000
    assert (a == c).mean() >= 0.999
    assert np.abs(ref.probabilities - ov.probabilities).max() < 5e-3  # fp32 both, different kernels
    assert len([f for f in os.listdir(cache) if f.endswith(".xml")]) == 1  # exported once, by weights hash
    auto = segment(case.sequences, b, "cpu", SegmentOptions(backend="auto", precision="fp32"))
    decisions = [f for f in os.listdir(cache) if f.endswith(".decision.json")]
    assert len(decisions) == 1
    measured = json.load(open(cache / decisions[0]))
    windows = auto.input_geometry["windows"]  # OpenVINO's start-up counts against this case's windows
    faster = measured["openvino_setup_s"] + windows * measured["openvino_s"] < windows * measured["torch_s"]
    assert auto.backend == ("openvino" if faster else "torch")
