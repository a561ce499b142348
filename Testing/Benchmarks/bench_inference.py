"""Whole-case inference time and memory on a real BraTS case: ours against the MONAI BraTS recipe.

Rows, each a fresh process, run in alternation for ``--rounds`` rounds on the same case:

* ``ours <model>``: ``braintumorseg segment --case CASE`` with default settings (reading,
  preprocessing, prediction, postprocessing, writing), for each ``--models`` entry (the first is
  the default model), each ``--backends`` and each ``--windows`` value;
* ``monai recipe``: the MONAI BraTS bundle's inference (SegResNet, init_filters 16, blocks_down
  1-2-2-4, blocks_up 1-1-1; ``NormalizeIntensity(nonzero=True, channel_wise=True)``; one
  240 x 240 x 160 window; sigmoid > 0.5), reading the four NIfTI files and writing the labels.
  Its weights are random (seeded): this row measures time and memory only.

Prints the CPU (model and AVX2 / AVX-512 / AVX512-BF16 / AMX flags), the median wall time of the
whole process, its peak resident memory (ru_maxrss), the ratio of the MONAI row's time to each
row's (and the first row's time over MONAI's in each round, to show the spread), the label
agreement of each of our rows with the default model's labels, and the default model's own split
of the time (from its report).

Run: python Testing/Benchmarks/bench_inference.py [--case ../shared/real-cases/Brats18_CBICA_AQO_1]
     [--models brats-glioma-v9-fold0 brats-synthetic-demo] [--backends auto openvino] [--windows auto patch] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CASE = os.path.join(HERE, "..", "..", "..", "shared", "real-cases", "Brats18_CBICA_AQO_1")


def cpu_description() -> str:
    model, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "unknown CPU":
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    names = [("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_bf16", "AVX512-BF16"), ("amx_bf16", "AMX")]
    have = [n for f, n in names if f in flags] or ["none of AVX2/AVX-512/AMX"]
    return f"{model}, {os.cpu_count()} logical CPUs, {'/'.join(have)}"


def run_process(cmd, env=None):
    """Wall seconds and peak resident MB of one child process (its own ru_maxrss)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(p.pid, 0)
    secs = time.perf_counter() - t0
    out, err = p.stdout.read().decode(), p.stderr.read().decode()
    p.stdout.close()
    p.stderr.close()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode:
        raise RuntimeError(f"{' '.join(cmd[:4])}...: {err.strip().splitlines()[-1] if err.strip() else p.returncode}")
    return secs, usage.ru_maxrss / 1024, out


def monai_recipe(case_dir: str, out: str) -> None:
    """The MONAI BraTS bundle's inference on one case (random weights), as one process runs it."""
    import nibabel as nib
    import torch
    from monai.networks.nets import SegResNet
    from monai.transforms import NormalizeIntensity

    from BrainTumorSegLib.read.cases import find_case

    paths = find_case(case_dir).paths
    imgs = [nib.load(paths[r]) for r in ("t1ce", "t1", "t2", "flair")]  # the bundle's channel order
    x = torch.from_numpy(np.stack([np.asarray(i.dataobj, dtype=np.float32) for i in imgs]))
    x = NormalizeIntensity(nonzero=True, channel_wise=True)(x)
    torch.manual_seed(0)
    net = SegResNet(blocks_down=[1, 2, 2, 4], blocks_up=[1, 1, 1], init_filters=16, in_channels=4,
                    out_channels=3, dropout_prob=0.2).eval()
    size = x.shape[1:]
    pad = [(0, max(0, t - s)) for s, t in zip(size, (240, 240, 160))]
    xp = torch.nn.functional.pad(x, [p for ax in reversed(pad) for p in ax])
    with torch.inference_mode():
        prob = torch.sigmoid(net(xp[None]))[0][(slice(None),) + tuple(slice(0, s) for s in size)]
    regions = (prob > 0.5).numpy()
    labels = np.zeros(size, np.uint8)
    labels[regions[1]] = 2  # WT
    labels[regions[0]] = 1  # TC
    labels[regions[2]] = 4  # ET
    nib.save(nib.Nifti1Image(labels, imgs[0].affine), out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", default=DEFAULT_CASE, help="a real 240x240x155 BraTS case folder")
    ap.add_argument("--models", nargs="+", default=None, help="models to time (first: the reference for agreement)")
    ap.add_argument("--backends", nargs="+", default=["auto"], help="segment --backend values to time per model")
    ap.add_argument("--windows", nargs="+", default=["auto"], help="segment --window values to time per model")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--monai-one", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.monai_one:
        return monai_recipe(*args.monai_one)

    import SimpleITK as sitk
    import torch

    from BrainTumorSegLib.models import bundles

    models = args.models or [bundles.DEFAULT_MODEL]
    case = os.path.abspath(args.case)
    print(f"case {os.path.basename(case)}; {cpu_description()}; torch {torch.__version__}; "
          f"{torch.get_num_threads()} threads; {args.rounds} rounds, alternating")
    rows = {f"ours {m} ({b}" + (f", {w})" if w != "auto" else ")"): (m, b, w) for m in models for b in args.backends
            for w in args.windows if not (b == "openvino" and w == "whole")}
    rows["monai recipe"] = None
    times = {k: [] for k in rows}
    peaks = {k: [] for k in rows}
    reports = {}
    with tempfile.TemporaryDirectory() as d:
        for _ in range(args.rounds):
            for name, spec in rows.items():
                out = os.path.join(d, f"{len(times[name])}-{name.replace(' ', '_').replace('(', '').replace(')', '')}.nii.gz")
                if spec is None:
                    cmd = [sys.executable, os.path.abspath(__file__), "--monai-one", case, out]
                else:
                    rep = out + ".json"
                    cmd = [sys.executable, "-m", "BrainTumorSegLib", "segment", "--case", case, "-o", out,
                           "--model", spec[0], "--backend", spec[1], "--window", spec[2], "--quiet", "--report", rep]
                secs, peak, _ = run_process(cmd)
                times[name].append(secs)
                peaks[name].append(peak)
                if spec is not None:
                    reports[name] = (json.load(open(rep)), sitk.GetArrayFromImage(sitk.ReadImage(out)))
        first = next(iter(rows))
        ref = reports[first][1]
        monai_t = statistics.median(times["monai recipe"])
        print(f"{'row':<44}{'s/case':>9}{'peak MB':>9}{'vs MONAI':>10}{'labels equal to first row':>27}  backend")
        for name in rows:
            t = statistics.median(times[name])
            agree = f"{(reports[name][1] == ref).mean():.5%}" if name in reports else "n/a (random weights)"
            used = reports[name][0].get("backend", "?") if name in reports else "torch"
            if name in reports:
                used += f", window {reports[name][0].get('input_geometry', {}).get('window', '?')}"
            print(f"{name:<44}{t:>9.1f}{max(peaks[name]):>9.0f}{monai_t / t:>9.2f}x{agree:>27}  {used}")
        # a shared or busy machine moves both rows from round to round: the spread of the ratio shows it
        per_round = ", ".join(f"{a / b:.2f}" for a, b in zip(times[first], times["monai recipe"]))
        print(f"first row's time / MONAI's, round by round: {per_round}")
        rep = reports[first][0]
        split = ", ".join(f"{k} {v:.1f}" for k, v in rep["timings_s"].items())
        print(f"default model split (s, inside the process, last round): {split}")


if __name__ == "__main__":
    main()
