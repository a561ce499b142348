"""README's commands, run verbatim with bash in a fresh copy of the repository.

The copy is ``git archive HEAD``: what is committed, not uncommitted changes or untracked files.
The fenced ``sh`` blocks under README's headings "Quick start" and "Install from a wheel" are run
in README's order, each exactly as written:

- the quick start's first command sets up ``.venv`` through ``Resources/Scripts/setup_venv.py``
  and segments the sample case: its labels, its report with Dice against the expert labels, and
  the Dice figures README quotes for it must come out;
- the quick start's test command runs as written, but with ``PYTEST_ADDOPTS="--collect-only -q"``
  in its environment, which pytest reads: it installs the ``test`` extra and collects the default
  suite instead of running it a second time (CI's default step runs it);
- the wheel block runs in an environment that already has torch, as README asks, with that
  environment first on PATH: the wheel (lowercase file name) is built, installed (not editable)
  and answers ``--version``.

``BRAINTUMORSEG_TORCH=torch==<this torch's version>`` is set, so the bootstrap takes torch from the
configured package index instead of PyTorch's CPU index. Needs git, bash and that index; minutes.
"""
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

import pytest
import SimpleITK as sitk
import torch

from BrainTumorSegLib import __version__

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN_SECTIONS = ("Quick start", "Install from a wheel")
SAMPLE = "Resources/Samples/Brats18_TCIA01_231_1"


def runnable_blocks(readme: str) -> list:
    """(section, code) of every ```sh block under a heading of RUN_SECTIONS, in README's order."""
    blocks, section, code = [], None, None
    for line in readme.splitlines():
        if code is not None:
            if line.strip() == "```":
                blocks.append((section, "\n".join(code)))
                code = None
            else:
                code.append(line)
        elif line.startswith("#"):
            section = line.lstrip("#").strip()
        elif line.strip() == "```sh" and section in RUN_SECTIONS:
            code = []
    return blocks


def clean_env(**extra: str) -> dict:
    """This environment without the virtual environment the tests run in, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTEST_ADDOPTS")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p and not os.path.abspath(p).startswith(ROOT + os.sep))
    env["BRAINTUMORSEG_TORCH"] = "torch==" + torch.__version__.split("+")[0]
    env.update(extra)
    return env


def bash(code: str, cwd: str, env: dict) -> subprocess.CompletedProcess:
    r = subprocess.run(["bash", "-e", "-c", code], cwd=cwd, env=env, capture_output=True, encoding="utf-8",
                       errors="replace", timeout=1800)  # the console may be ASCII: decode as the tools write
    assert r.returncode == 0, f"exit {r.returncode}:\n{code}\n--- stdout\n{r.stdout[-4000:]}\n--- stderr\n{r.stderr[-4000:]}"
    return r


@pytest.mark.slow
def test_readme_commands_run_verbatim_in_a_fresh_copy():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    blocks = runnable_blocks(readme)
    assert [s for s, _ in blocks] == ["Quick start", "Quick start", "Install from a wheel"], blocks
    (_, segment_cmd), (_, test_cmd), (_, wheel_cmd) = blocks
    assert "braintumorseg segment" in segment_cmd and "pytest" in test_cmd and "pip wheel" in wheel_cmd
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        assert test_cmd + "\n" in f.read(), "CI runs README's test command verbatim: .ci/run must hold it byte for byte"

    with tempfile.TemporaryDirectory(prefix="btseg-readme-") as tmp:
        copy = os.path.join(tmp, "repo")
        os.makedirs(copy)
        archive = subprocess.run(["git", "-C", ROOT, "archive", "--format=tar", "-o", os.path.join(tmp, "head.tar"), "HEAD"],
                                 capture_output=True, text=True)
        assert archive.returncode == 0, archive.stderr
        subprocess.run(["tar", "-xf", os.path.join(tmp, "head.tar"), "-C", copy], check=True)

        # 1. set up and segment the sample case
        r = bash(segment_cmd, copy, clean_env())
        assert f"installing {clean_env()['BRAINTUMORSEG_TORCH']}" in r.stdout  # the bootstrap honoured the variable
        labels = sitk.ReadImage(os.path.join(copy, "out", "sample_pred.nii.gz"))
        t1ce = sitk.ReadImage(os.path.join(copy, SAMPLE, "Brats18_TCIA01_231_1_t1ce.nii.gz"))
        assert labels.GetSize() == t1ce.GetSize() and labels.GetPixelID() == sitk.sitkUInt8
        values = set(sitk.GetArrayViewFromImage(labels).ravel().tolist())
        assert values == {0, 1, 2, 4}, values
        with open(os.path.join(copy, "out", "sample_report.json"), encoding="utf-8") as f:
            report = json.load(f)
        dice = {r_: report["against_reference"][r_]["dice"] for r_ in ("WT", "TC", "ET")}
        quoted = re.search(r"\(WT (\d\.\d+), TC (\d\.\d+), ET (\d\.\d+)", readme)
        assert quoted, "README quotes the sample's Dice as (WT x, TC y, ET z"
        for region, stated in zip(("WT", "TC", "ET"), map(float, quoted.groups())):
            assert abs(dice[region] - stated) < 0.01, (region, dice[region], stated)
        assert "against the reference labels: WT Dice" in r.stdout

        # 2. the test command, kept to collecting the default suite
        r = bash(test_cmd, copy, clean_env(PYTEST_ADDOPTS="--collect-only -q"))
        collected = re.search(r"(\d+)(?:/\d+)? tests? collected", r.stdout)
        assert collected and int(collected.group(1)) > 100, r.stdout[-2000:]
        venv_python = os.path.join(copy, ".venv", "bin", "python")
        subprocess.run([venv_python, "-c", "import monai, nilearn, matplotlib, pytest"], check=True)

        # 3. the wheel, into an environment that already has torch, first on PATH
        env_dir = os.path.join(tmp, "wheel-env")
        subprocess.run([sys.executable, "-m", "venv", env_dir], check=True)
        subprocess.run([os.path.join(env_dir, "bin", "python"), "-m", "pip", "install", "-q",
                        clean_env()["BRAINTUMORSEG_TORCH"]], check=True, timeout=1800)
        env = clean_env(VIRTUAL_ENV=env_dir)
        env["PATH"] = os.path.join(env_dir, "bin") + os.pathsep + env["PATH"]
        r = bash(wheel_cmd, copy, env)
        assert f"braintumorseg {__version__}" in r.stdout
        assert [os.path.basename(w) for w in glob.glob(os.path.join(copy, "dist", "*.whl"))] == \
            [f"braintumorseglib-{__version__}-py3-none-any.whl"]
        where = subprocess.run([os.path.join(env_dir, "bin", "python"), "-c",
                                "import BrainTumorSegLib; print(BrainTumorSegLib.__file__)"],
                               capture_output=True, text=True, cwd=tmp, check=True).stdout.strip()
        assert where.startswith(env_dir + os.sep), where  # installed from the wheel, not the source tree
