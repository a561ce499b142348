"""Pack the Python packages a device call needs and the lent GPU machine lacks, small enough to travel.

That machine has torch, numpy, scipy, safetensors and matplotlib, but not SimpleITK, and nothing
can be fetched there; at most 64 MiB of the working tree travel with a call. SimpleITK's wheel is
52.8 MB (zip); unpacked and packed again with xz it is 28.2 MB, so that ``check_cuda.py`` with the
default model fits in one call (segment needs no nibabel since stop 51). Run here, once (it downloads
the wheels from PyPI for the device's Python, pinned to the versions installed here):

    echo /.kit/ >> .git/info/exclude
    python Testing/Device/kit.py --out .kit
    # device run: carry [".kit"], the models other than the default moved aside for the call
    # (docs/training.md, "On a lent GPU machine"):
    #   mkdir -p /tmp/site && tar xJf .kit/packages.tar.xz -C /tmp/site && export PYTHONPATH=/tmp/site &&
    #   python3 Testing/Device/check_cuda.py --work /tmp/cc --json $OUT/check_cuda.json

``.kit/packages.json`` lists each package, its version, its wheel and the wheel's sha256.
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from importlib import metadata
from typing import Dict, List, Sequence

PACKAGES = ("SimpleITK",)  # what segment needs beyond the machine's own packages
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def download(names: Sequence[str], python: str, into: str) -> List[str]:
    """The wheels of ``names`` at the versions installed here, for CPython ``python`` on x86-64 Linux."""
    pins = [f"{n}=={metadata.version(n)}" for n in names]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           python, "--implementation", "cp", "-d", into] + [a for p in PLATFORMS for a in ("--platform", p)] + pins
    subprocess.run(cmd, check=True)
    return sorted(os.path.join(into, f) for f in os.listdir(into) if f.endswith(".whl"))


def pack(wheels: Sequence[str], out: str) -> Dict:
    """Unpack ``wheels`` into one tree and write it to ``out/packages.tar.xz`` (an importable site
    folder once extracted); returns what ``packages.json`` records."""
    record: Dict = {"extract": "tar xJf packages.tar.xz -C SITE; PYTHONPATH=SITE", "wheels": []}
    with tempfile.TemporaryDirectory() as tree:
        for w in wheels:
            name, version = os.path.basename(w).split("-")[:2]  # a wheel's file name starts NAME-VERSION-
            with zipfile.ZipFile(w) as z:
                z.extractall(tree)
            with open(w, "rb") as f:
                record["wheels"].append({"name": name, "version": version, "file": os.path.basename(w),
                                         "sha256": hashlib.sha256(f.read()).hexdigest()})
        part = os.path.join(out, "packages.tar.xz.part")
        with tarfile.open(part, "w:xz", preset=9) as tar:
            for name in sorted(os.listdir(tree)):
                tar.add(os.path.join(tree, name), arcname=name)
        os.replace(part, os.path.join(out, "packages.tar.xz"))
    record["bytes"] = os.path.getsize(os.path.join(out, "packages.tar.xz"))
    return record


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="a new folder, ignored by git, that the device call carries")
    ap.add_argument("--python", default="3.12", help="the device's Python version (its python3: 3.12)")
    ap.add_argument("--packages", nargs="+", default=list(PACKAGES))
    a = ap.parse_args()
    if os.path.exists(a.out):
        print(f"{a.out}: exists; give a new folder", file=sys.stderr)
        return 2
    os.makedirs(a.out)
    try:
        with tempfile.TemporaryDirectory() as wheels:
            record = pack(download(a.packages, a.python, wheels), a.out)
        with open(os.path.join(a.out, "packages.json"), "w") as f:
            json.dump(record, f, indent=1)
    except BaseException:
        shutil.rmtree(a.out, ignore_errors=True)  # no half-made kit: the folder is new, so all of it goes
        raise
    print(f"{a.out}/packages.tar.xz: {record['bytes'] / 1e6:.1f} MB, "
          + ", ".join(w["file"] for w in record["wheels"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
