"""The wheel holds the whole package and the shipped models; the version and extras behave."""
import fnmatch
import os
import re
import subprocess
import sys
import zipfile

import pytest
from conftest import run_cli

from BrainTumorSegLib import __version__, extras
from BrainTumorSegLib.errors import InputError
from BrainTumorSegLib.models import bundles, ensembles

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def readme() -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return f.read()


def package_files() -> set:
    out = set()
    pkg = os.path.join(ROOT, "BrainTumorSegLib")
    for d, dirs, names in os.walk(pkg):
        dirs[:] = [x for x in dirs if x != "__pycache__"]
        for n in names:
            rel = os.path.relpath(os.path.join(d, n), ROOT).replace(os.sep, "/")
            if n.endswith(".py") or "/models/" in rel:
                out.add(rel)
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out), ROOT], check=True, capture_output=True, timeout=300)
    (whl,) = [f for f in os.listdir(out) if f.endswith(".whl")]
    return str(out / whl)


def test_wheel_holds_every_module_and_every_shipped_model(wheel):
    names = {n for n in zipfile.ZipFile(wheel).namelist() if ".dist-info/" not in n}
    assert names == package_files()
    for model in os.listdir(bundles.shipped_models_dir()):
        folder = os.path.join(bundles.shipped_models_dir(), model)
        if os.path.isdir(folder):
            assert f"BrainTumorSegLib/models/{model}/manifest.json" in names
            if ensembles.describe(folder)["format"] != bundles.ENSEMBLE_FORMAT:  # an ensemble is its manifest only
                assert f"BrainTumorSegLib/models/{model}/weights.safetensors" in names
    assert f"-{__version__}-" in os.path.basename(wheel)


def test_wheel_metadata_keeps_the_core_light(wheel):
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    core = [ln.split(":", 1)[1].strip() for ln in meta.splitlines()
            if ln.startswith("Requires-Dist:") and "extra ==" not in ln]
    names = {r.split(">")[0].split("=")[0].split("<")[0].strip().lower() for r in core}
    assert names == {"torch", "numpy", "simpleitk", "safetensors", "scipy"}
    for extra in ("phantoms", "train", "test"):
        assert f"Provides-Extra: {extra}" in meta


def test_shipped_models_are_found_through_the_package():
    assert bundles.shipped_models_dir() == os.path.dirname(os.path.abspath(bundles.__file__))  # the models package
    for folder in ensembles.members(bundles.DEFAULT_MODEL):
        assert os.path.dirname(folder) == bundles.shipped_models_dir()
        assert os.path.exists(os.path.join(folder, "weights.safetensors"))


def test_readme_names_the_wheel_as_it_is_built(wheel):
    """The wheel's file name is normalised (lower case): README's install line must match it."""
    patterns = re.findall(r"pip install (dist/\S+\.whl)", readme())
    assert patterns and all(fnmatch.fnmatch("dist/" + os.path.basename(wheel), p) for p in patterns)


def test_readme_test_command_is_the_one_ci_runs_and_its_quick_start_writes_into_an_ignored_folder():
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        ci = f.read().splitlines()
    command = ci[next(i for i, ln in enumerate(ci) if ln.startswith("# README test command, verbatim")) + 1]
    assert command in readme().splitlines() and "setup_venv.py test " in command
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        test_extra = re.search(r"^test = \[(.*?)\]", f.read(), re.M | re.S)
    assert test_extra and '"hypothesis' in test_extra.group(1)  # the command's test extra brings hypothesis
    quick = next(ln for ln in readme().splitlines() if " segment --case Resources/Samples/" in ln)
    written = re.findall(r"(?:-o|--report) (\S+)", quick)
    with open(os.path.join(ROOT, ".gitignore"), encoding="utf-8") as f:
        ignored = f.read().splitlines()
    assert len(written) == 2 and all(f"/{w.split('/')[0]}/" in ignored for w in written), (written, ignored)


def test_version_flag():
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"braintumorseg {__version__}"


def test_a_missing_extra_is_one_line_naming_it(monkeypatch):
    monkeypatch.setitem(extras.EXTRAS, "phantoms", ("no_such_module_btseg", "synthetic cases need it"))
    with pytest.raises(InputError) as exc:
        extras.require("phantoms")
    assert 'pip install "BrainTumorSegLib[phantoms]"' in str(exc.value) and "\n" not in str(exc.value)


def test_the_device_kit_packs_wheels_into_an_importable_site_folder(tmp_path):
    """Testing/Device/kit.py: wheels unpacked and packed again with xz import from the extracted tree
    (the download from PyPI is not run here: no network in tests)."""
    import importlib.util
    import tarfile

    spec = importlib.util.spec_from_file_location("kit", os.path.join(ROOT, "Testing", "Device", "kit.py"))
    kit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kit)
    wheel = tmp_path / "tinypkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("tinypkg/__init__.py", "VALUE = 42\n")
        z.writestr("tinypkg/data/table.txt", "x" * 100000)  # compresses: the kit must be smaller than that
        z.writestr("tinypkg-1.0.dist-info/METADATA", "Name: tinypkg\nVersion: 1.0\n")
    out = tmp_path / "kit"
    out.mkdir()
    record = kit.pack([str(wheel)], str(out))
    assert sorted(os.listdir(out)) == ["packages.tar.xz"] and record["bytes"] < 2000
    w = record["wheels"][0]
    assert (w["name"], w["version"], w["file"], len(w["sha256"])) == ("tinypkg", "1.0", wheel.name, 64)
    site = tmp_path / "site"
    with tarfile.open(out / "packages.tar.xz") as tar:
        tar.extractall(site, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    r = subprocess.run([sys.executable, "-c", "import tinypkg; print(tinypkg.VALUE)"], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(site)), cwd=str(tmp_path))
    assert r.returncode == 0 and r.stdout.strip() == "42", r.stderr
