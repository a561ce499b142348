#!/usr/bin/env python3
"""Set up the project's virtual environment, with the PyTorch build that fits this machine.

    python3 Resources/Scripts/setup_venv.py [EXTRA ...]      e.g.  ... setup_venv.py test

1. Creates ``.venv`` in the repository root (an existing one is reused).
2. Installs torch, unless ``.venv`` has it already:
   - ``BRAINTUMORSEG_TORCH`` set (a pip requirement such as ``torch==2.13.0``, or a wheel file):
     exactly that, from your normal package index; it is installed even when ``.venv`` has torch;
   - an NVIDIA GPU (``nvidia-smi`` on PATH or ``/proc/driver/nvidia``): torch from PyPI (CUDA build);
   - otherwise: the CPU build from PyTorch's CPU index (https://download.pytorch.org/whl/cpu), so
     that a machine without an NVIDIA GPU does not download the multi-GB CUDA build. Where that
     index cannot be reached, it says so and falls back to your normal index.
3. Installs this project editable (``pip install -e .``) with the extras named as arguments
   (``test``, ``train``, ``phantoms``, ``openvino``, ``clinical``, ``dicom``, ``qc``).

Python standard library only, so that it runs before anything is installed; Python 3.9 or newer.
"""
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH_ENV = "BRAINTUMORSEG_TORCH"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV = os.path.join(ROOT, ".venv")
PROG = "setup_venv"


class SetupError(Exception):
    """A step failed; the message says which and what to do."""


def say(text: str) -> None:
    print(f"{PROG}: {text}", flush=True)


def venv_python() -> str:
    return os.path.join(VENV, "Scripts", "python.exe") if os.name == "nt" else os.path.join(VENV, "bin", "python")


def run(cmd, what: str) -> None:
    if subprocess.call(cmd) != 0:
        raise SetupError(f"{what} failed (command: {' '.join(cmd)}); see pip's message above")


def pip(*args: str, what: str) -> None:
    run([venv_python(), "-m", "pip", *args], what)


def declared_extras() -> list:
    """The extras of pyproject.toml's [project.optional-dependencies] (no TOML parser before 3.11)."""
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        text = f.read()
    section = re.search(r"^\[project\.optional-dependencies\]\n(.*?)(?=^\[)", text, re.S | re.M)
    return re.findall(r"^([A-Za-z0-9_.-]+)\s*=", section.group(1), re.M) if section else []


def nvidia_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None or os.path.exists("/proc/driver/nvidia")


def venv_torch() -> str:
    """The torch version in .venv, or '' when it has none."""
    r = subprocess.run([venv_python(), "-c", "import torch; print(torch.__version__)"],
                       capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else ""


def reachable(url: str, timeout: float = 15.0) -> str:
    """'' when ``url`` answers, else why not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return ""
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return str(getattr(exc, "reason", exc))


def make_venv() -> None:
    if os.path.exists(venv_python()):
        say(f"using the existing {VENV}")
        return
    say(f"creating {VENV}")
    run([sys.executable, "-m", "venv", VENV], "creating the virtual environment (on Debian/Ubuntu: apt install python3-venv)")
    version = subprocess.run([venv_python(), "-m", "pip", "--version"], capture_output=True, text=True).stdout.split()
    if len(version) > 1 and tuple(int(x) for x in re.findall(r"\d+", version[1])[:2]) < (21, 3):
        pip("install", "-q", "--upgrade", "pip", what="upgrading pip (editable installs need pip 21.3 or newer)")


def install_torch() -> None:
    wanted = os.environ.get(TORCH_ENV, "").strip()
    if wanted:
        say(f"installing {wanted} from your normal package index ({TORCH_ENV})")
        pip("install", wanted, what=f"installing {wanted} ({TORCH_ENV})")
        return
    have = venv_torch()
    if have:
        say(f"keeping torch {have} in .venv (set {TORCH_ENV}, e.g. {TORCH_ENV}=\"torch==2.13.0\", to install another)")
        return
    if nvidia_gpu():
        say("NVIDIA GPU found: installing torch from PyPI (a CUDA build: several GB)")
        pip("install", "torch", what="installing torch")
        return
    why = reachable(CPU_INDEX + "/torch/")
    if not why:
        say(f"no NVIDIA GPU: installing the CPU build of torch from {CPU_INDEX}")
        try:
            pip("install", "torch", "--index-url", CPU_INDEX, what="installing torch from the CPU index")
            return
        except SetupError as exc:
            why = str(exc)
    say(f"no NVIDIA GPU, but PyTorch's CPU index could not be used ({why}).\n"
        f"{PROG}: falling back to your normal package index. On Linux x86-64 PyPI's torch is the CUDA build "
        f"(several GB); to choose another, stop now (Ctrl-C) and run again with {TORCH_ENV} set to a pip "
        f"requirement or a wheel file, e.g. {TORCH_ENV}=\"torch==2.13.0\".")
    pip("install", "torch", what="installing torch from your normal package index")


def main(argv) -> int:
    if sys.version_info < (3, 9):
        print(f"{PROG}: error: Python 3.9 or newer is needed (this is {sys.version.split()[0]})", file=sys.stderr)
        return 2
    if "-h" in argv or "--help" in argv:
        print(__doc__)
        return 0
    known = declared_extras()
    unknown = [a for a in argv if a not in known]
    if unknown:
        print(f"{PROG}: error: unknown extra {', '.join(unknown)}; the extras are: {', '.join(known)}", file=sys.stderr)
        return 2
    try:
        make_venv()
        install_torch()
        extras = f"[{','.join(argv)}]" if argv else ""
        say(f"installing this project: pip install -e .{extras}")
        pip("install", "-q", "-e", ROOT + extras, what="installing the project")
    except SetupError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: stopped", file=sys.stderr)
        return 130
    say(f"ready: {os.path.relpath(os.path.join(os.path.dirname(venv_python()), 'braintumorseg'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
