"""The four networks under one CPU budget, scored on held-out synthetic phantoms.

Each network (its paper's default size, and the loss and optimiser it declares) trains
on the same cached phantoms with the same patch size, batch and augmentation. Seconds per
iteration are measured first on this machine (after one warm-up iteration), and the number of
epochs is set so that training fills the budget; the schedule therefore runs to its end. The
exported bundle then segments the held-out cases through the full ``segment`` path and is
scored with the BraTS metrics. Prints a table (and writes ``results.json`` in ``--out``).

The budget is time on ``--threads`` threads, turned into an iteration count per network from
timings taken back to back before any training (so a busy machine later does not change it); the
ranking it gives is for that budget, not for a full training run (the papers trained for days on
GPUs).

Run: python Testing/Benchmarks/bench_networks.py --train DIR --test DIR --out DIR
         [--minutes 20] [--threads 1] [--patch 96] [--networks resunet cga_unet ...]
(the demo recipe's phantoms: ``braintumorseg phantom DIR --n 40 --seed 1000`` and ``--seed 3000``)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

from BrainTumorSegLib.networks import NETWORKS, build
from BrainTumorSegLib.networks.flops import count_parameters
from BrainTumorSegLib.read.cases import find_cases
from BrainTumorSegLib.recipes.demo import held_out_scores
from BrainTumorSegLib.training import PatchDataset, TrainConfig, cache_case, compute_loss, make_optimizer, train

ITERS_PER_EPOCH = 10


def seconds_per_iteration(name: str, files, patch, batch: int) -> float:
    """Median time of three training iterations after one warm-up, on this machine now."""
    torch.manual_seed(0)
    net = build(name).train()
    opt = make_optimizer(net, net.training_defaults.lr)
    ds = PatchDataset(files, patch, 4 * batch, 0, 1 / 3, False)
    times = []
    for i, (x, y) in enumerate(torch.utils.data.DataLoader(ds, batch_size=batch)):
        t0 = time.perf_counter()
        opt.zero_grad()
        compute_loss(net, net(x), y, 0).backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--cache", default=None, help="shared preprocessing cache (default OUT/cache)")
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--patch", type=int, default=96)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--networks", nargs="+", default=list(NETWORKS))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    cache = args.cache or os.path.join(args.out, "cache")
    os.makedirs(cache, exist_ok=True)
    train_cases = find_cases(args.train)
    files = [cache_case(c, cache) for c in train_cases]
    patch = (args.patch,) * 3
    results = {}
    # all networks are timed back to back first, under the same conditions; the iteration counts
    # fixed here are the budget, whatever else the machine does later during training
    speed = {name: seconds_per_iteration(name, files, patch, args.batch) for name in args.networks}
    for name in args.networks:
        s_it = speed[name]
        epochs = max(1, int(args.minutes * 60 / (s_it * ITERS_PER_EPOCH)))
        print(f"{name}: {s_it:.2f} s/iteration -> {epochs} epochs of {ITERS_PER_EPOCH} iterations", flush=True)
        cfg = TrainConfig(network=name, epochs=epochs, iters_per_epoch=ITERS_PER_EPOCH, batch=args.batch,
                          patch=patch, seed=0)
        t0 = time.perf_counter()
        bundle = train(cfg, train_cases, [], os.path.join(args.out, name), resume=True, cache_dir=cache,
                       log=lambda *a: None)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        scores = held_out_scores(bundle, args.test)
        per_case = (time.perf_counter() - t0) / max(1, scores["cases"])
        results[name] = {"params_M": count_parameters(build(name)) / 1e6, "s_per_iteration": s_it,
                         "iterations": epochs * ITERS_PER_EPOCH, "train_minutes": train_s / 60,
                         "segment_s_per_case": per_case, **scores}
        print(json.dumps({name: results[name]}), flush=True)
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)
    print(f"\nSame budget: {args.minutes:g} min of training on {args.threads} thread(s), patch {args.patch}^3, "
          f"batch {args.batch}; {len(train_cases)} training phantoms, {results and next(iter(results.values()))['cases']} "
          "held-out phantoms; Dice mean over cases.")
    print(f"{'network':<11}{'params M':>9}{'s/it':>7}{'its':>6}{'Dice WT':>9}{'Dice TC':>9}{'Dice ET':>9}"
          f"{'HD95 WT':>9}{'s/case':>8}")
    for name, r in results.items():
        print(f"{name:<11}{r['params_M']:>9.2f}{r['s_per_iteration']:>7.2f}{r['iterations']:>6}"
              f"{r['dice_WT']:>9.3f}{r['dice_TC']:>9.3f}{r['dice_ET']:>9.3f}{r['hd95_WT']:>9.1f}"
              f"{r['segment_s_per_case']:>8.1f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
