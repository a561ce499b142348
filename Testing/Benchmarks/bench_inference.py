"""Inference speed and memory on a 240 x 240 x 155 synthetic case, ours against MONAI.

For each network (random weights, seeded; the shipped demo model for ``resunet`` when present),
the same preprocessed input is predicted by:

* ``monai``: MONAI's ``sliding_window_inference`` (Gaussian mode, sigma 1/8, same window,
  overlap and network, fp32), the peer;
* ``ours-fp32``: our sliding window, fp32 (the reference for label agreement);
* ``ours``: our default CPU path (``--bf16``-style autocast where the CPU supports it).

Each measurement runs in a fresh subprocess so its peak resident memory (VmHWM) is its own.
Prints seconds per case, peak memory, the speed ratio against MONAI and the fraction of voxels
whose labels differ from ours-fp32. Also times the whole ``segment`` call for the default model.

Run: python Testing/Benchmarks/bench_inference.py [--networks resunet cga_unet ...]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def one(args) -> None:
    import torch

    from BrainTumorSegLib import bundles
    from BrainTumorSegLib.inference import SegmentOptions, predict_probabilities, probabilities_to_labels
    from BrainTumorSegLib.networks import build

    data = np.load(args.data)
    if args.network == "resunet" and os.path.exists(os.path.join(bundles.shipped_models_dir(), bundles.DEFAULT_MODEL)):
        b = bundles.load(bundles.DEFAULT_MODEL)
        net = b.network
        patch = tuple(b.manifest["patch_size"])
    else:
        torch.manual_seed(0)
        net = build(args.network).eval()
        patch = tuple(net.patch_size)
    kind = net.output_kind
    x = torch.from_numpy(data)
    t0 = time.perf_counter()
    if args.impl == "monai":
        from monai.inferers import sliding_window_inference

        with torch.inference_mode():
            logits = sliding_window_inference(x[None], patch, 1, net, overlap=args.overlap, mode="gaussian",
                                              sigma_scale=0.125)[0]
            probs = (torch.softmax(logits, 0) if kind == "softmax" else torch.sigmoid(logits)).numpy()
    else:
        bundle = bundles.Bundle("(bench)", {"output_kind": kind, "patch_size": list(patch), "network": args.network}, net)
        opts = SegmentOptions(overlap=args.overlap, cpu_bf16=args.impl == "ours-bf16")
        probs, _, _ = predict_probabilities(data, [bundle], torch.device("cpu"), opts)
    secs = time.perf_counter() - t0
    labels = probabilities_to_labels(probs, kind, "brats2021")
    np.save(args.out, labels)
    print(json.dumps({"seconds": secs, "peak_mb": peak_rss_mb()}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--networks", nargs="+", default=["resunet", "cga_unet", "agse_vnet", "dmda_unet"])
    ap.add_argument("--overlap", type=float, default=0.5)
    ap.add_argument("--impls", nargs="+", default=["monai", "ours-fp32", "ours-bf16"])
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--network", help=argparse.SUPPRESS)
    ap.add_argument("--impl", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        return one(args)

    import torch

    from BrainTumorSegLib import phantom
    from BrainTumorSegLib.cases import find_case
    from BrainTumorSegLib.preprocessing import preprocess

    with tempfile.TemporaryDirectory() as d:
        phantom.generate(d, 1, seed=4242)
        case = find_case(os.path.join(d, "Synth_4242_0000"))
        pre = preprocess(case.sequences)
        data_path = os.path.join(d, "data.npy")
        np.save(data_path, pre.data)
        print(f"case 240x240x155, brain crop {pre.data.shape[1:]}, overlap {args.overlap}, "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        print(f"{'network':<11}{'impl':<11}{'s/case':>9}{'peak MB':>9}{'vs MONAI':>10}{'labels differ':>15}")
        for name in args.networks:
            res = {}
            for impl in args.impls:
                out = os.path.join(d, f"{name}-{impl}.npy")
                r = subprocess.run([sys.executable, __file__, "--one", "--network", name, "--impl", impl,
                                    "--data", data_path, "--out", out, "--overlap", str(args.overlap)],
                                   capture_output=True, text=True)
                if r.returncode:
                    print(f"{name:<11}{impl:<11} failed: {r.stderr.strip().splitlines()[-1]}")
                    continue
                res[impl] = json.loads(r.stdout.strip().splitlines()[-1]) | {"labels": np.load(out)}
            ref = res.get("ours-fp32", {}).get("labels")
            for impl, r in res.items():
                ratio = res["monai"]["seconds"] / r["seconds"] if "monai" in res else float("nan")
                diff = float((r["labels"] != ref).mean()) if ref is not None else float("nan")
                print(f"{name:<11}{impl:<11}{r['seconds']:>9.1f}{r['peak_mb']:>9.0f}{ratio:>9.2f}x{diff:>14.4%}")
        from BrainTumorSegLib.inference import segment
        t0 = time.perf_counter()
        try:
            seg = segment(case.sequences, device="cpu")
            print(f"default model, whole segment() call on CPU: {time.perf_counter() - t0:.1f} s "
                  f"(preprocess {seg.timings['preprocess']:.1f}, predict {seg.timings['predict']:.1f})")
        except Exception as exc:  # the default model may not be installed
            print(f"default model: not run ({exc})")


if __name__ == "__main__":
    main()
