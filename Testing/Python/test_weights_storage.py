"""Weights stored in half precision: half the size, loaded into fp32, nearly the same labels."""
import os

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import run_cli
from test_inference import small_case_dir, tiny_bundle  # noqa: F401 - fixtures

from BrainTumorSegLib.errors import InputError
from BrainTumorSegLib.models import bundles, catalog
from BrainTumorSegLib.pipeline import segment
from BrainTumorSegLib.read.cases import find_case


def test_float16_storage_halves_the_file_and_computes_in_float32(tiny_bundle, small_case_dir, tmp_path):  # noqa: F811
    full = bundles.load(tiny_bundle)
    out = bundles.save(full.network, str(tmp_path / "half"), full.manifest.to_json(), storage="float16")
    half = bundles.load(out)
    assert half.manifest.document["weights_storage"] == "float16"
    ratio = os.path.getsize(os.path.join(out, bundles.WEIGHTS)) / os.path.getsize(os.path.join(tiny_bundle, bundles.WEIGHTS))
    assert 0.45 < ratio < 0.6
    params = dict(half.network.named_parameters())
    assert all(p.dtype == torch.float32 for p in params.values())
    for name, p in full.network.named_parameters():
        assert torch.allclose(params[name], p, rtol=1e-3, atol=1e-4), name
    seqs = find_case(small_case_dir).sequences
    a = sitk.GetArrayFromImage(segment(seqs, full, "cpu").labels)
    b = sitk.GetArrayFromImage(segment(seqs, half, "cpu").labels)
    tumor = (a > 0) | (b > 0)
    assert tumor.sum() > 1000 and np.count_nonzero(a != b) <= 0.01 * tumor.sum()
    # saved again in float32, the manifest no longer says float16
    again = bundles.read_manifest(bundles.save(half.network, str(tmp_path / "again"), half.manifest.to_json()))
    assert "weights_storage" not in again.document
    with pytest.raises(InputError, match="weights storage must be one of"):
        bundles.save(full.network, str(tmp_path / "bad"), full.manifest.to_json(), storage="int8")
    assert not (tmp_path / "bad").exists()


def test_cli_convert_and_models_list_the_size_on_disk(tiny_bundle, tmp_path):  # noqa: F811
    (tmp_path / "models").mkdir()
    r = run_cli("convert", tiny_bundle, "--out", str(tmp_path / "models" / "tiny-half"))
    assert r.returncode == 0, r.stderr
    m = bundles.read_manifest(tmp_path / "models" / "tiny-half").document
    assert m["converted_from"]["weights_sha256"] == bundles.read_manifest(tiny_bundle).weights_sha256
    env = dict(os.environ, BRAINTUMORSEG_MODELS=str(tmp_path / "models"))
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "BrainTumorSegLib", "models"], capture_output=True, text=True, env=env)
    line = next(ln for ln in r.stdout.splitlines() if str(tmp_path / "models" / "tiny-half") in ln)
    size = catalog.size_on_disk(tmp_path / "models" / "tiny-half")
    assert f"({size / 1e6:.1f} MB on disk, weights stored as float16)" in line
