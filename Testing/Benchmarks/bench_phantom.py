"""Phantom generation speed: seconds per case and for 20 cases (target: 20 cases under a minute).

Run: python Testing/Benchmarks/bench_phantom.py [--n 20]
"""
import argparse
import tempfile
import time

from BrainTumorSegLib.synthetic import phantom


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20)
    args = ap.parse_args()
    phantom.template()  # load once, as the CLI does
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        phantom.generate(d, args.n, seed=0)
        dt = time.perf_counter() - t0
    print(f"phantom: {args.n} cases in {dt:.1f} s ({dt / args.n:.2f} s per case, written as .nii.gz)")
    print(f"target 20 cases < 60 s: {'met' if dt / args.n * 20 < 60 else 'NOT met'}")


if __name__ == "__main__":
    main()
