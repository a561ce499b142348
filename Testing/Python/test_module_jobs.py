"""The Slicer module's background jobs (``BrainTumorSegModuleLib.jobs``, no Slicer or Qt needed):
cancel through a launcher stops the whole process tree, and any output encoding is survived."""
import os
import stat
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "BrainTumorSeg"))

from BrainTumorSegModuleLib.jobs import Job  # noqa: E402

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX launcher script")


def script(path, text: str) -> str:
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return str(path)


def processes_mentioning(marker: str) -> list:
    """Live processes whose command line holds ``marker`` (from /proc, so nothing is mocked)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmd and state != "Z":
            found.append(int(pid))
    return found


def test_cancel_through_a_launcher_stops_every_process_and_writes_nothing(tmp_path, phantom_case_dir):
    # like PythonSlicer: a launcher that runs the real interpreter as a child (not exec) and waits
    launcher = script(tmp_path / "PythonLauncher", f'#!/bin/sh\n"{sys.executable}" "$@"\nexit $?\n')
    out = tmp_path / "cancelled_output_marker.nii.gz"
    job = Job(["segment", "--case", phantom_case_dir, "-o", str(out), "--model", "brats-synthetic-demo"],
              python=launcher)
    deadline = time.time() + 300
    while not job.stage.startswith("predict") and job.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert job.stage.startswith("predict"), (job.stage, job.stderr)
    assert len(processes_mentioning(str(out))) >= 2  # the launcher and its child
    t0 = time.time()
    job.cancel()
    assert time.time() - t0 < 10
    assert processes_mentioning(str(out)) == []
    time.sleep(2)
    assert not out.exists() and not [f for f in os.listdir(tmp_path) if f.startswith(".btseg-")]
    job.cancel()  # a second cancel (module reload, exit) is harmless


def test_output_in_any_encoding_is_read_and_the_job_ends(tmp_path):
    # a child writing bytes that are not UTF-8 (a locale code page), and a lot of them
    fake = script(tmp_path / "fake_python", "#!/bin/sh\n"
                  "i=0; while [ $i -lt 2000 ]; do printf 'caf\\351 \\377\\376 line %s\\n' $i; i=$((i+1)); done\n"
                  "printf 'progress predict 1/1 0.5000\\n'\n"
                  "printf 'braintumorseg: error: /data/caf\\351.nii.gz: is truncated\\n' >&2\n"
                  "exit 2\n")
    job = Job(["segment"], python=fake)
    t0 = time.time()
    while job.poll() is None and time.time() - t0 < 30:
        time.sleep(0.1)
    assert job.poll() == 2
    assert len(job.stdout) == 2000 and job.stage == "predict 1/1" and job.fraction == 0.5
    assert job.error == "/data/caf\ufffd.nii.gz: is truncated"
