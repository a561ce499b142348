"""Make the default design's five fold models again, by our own commands, resumably.

The default `brats-glioma-cascade-et-v9-all` is one design trained on all 32 shared cases; its
figures come from the same design trained five times, each fold held out
(docs/training.md). Run folders live outside the repository, so a fresh machine has only the
shipped `brats-glioma-v9-foldK`. This script makes, for each fold K, in order:

1. `brats-glioma-v18-foldK` (stage 1's second training, `--variant 2mm-cv-tc-noenh-fluid2-topk`:
   cystic cores and the TopK cross-entropy, from the shipped v9 fold);
2. `brats-glioma-soup-v9-v18-foldK` (`average` of the two: the default's stage 1);
3. `brats-glioma-cascade-et-v7-foldK`, `-v8-`, `-v9-` (stage 2, three rounds of 400 iterations on
   that stage 1's out-of-fold guides; v9 is the default's design).

`--design plain` makes the design of the default of stops 48-54 instead: `brats-glioma-v12-foldK`
(`--variant 2mm-cv-tc-noenh-fluid2`: the mean cross-entropy), the averages
`brats-glioma-soup-v9-v12-foldK` and stage 2's rounds `brats-glioma-cascade-et-v3-/v4-/v5-foldK`.
`--design tversky3` makes a candidate: v18 and `brats-glioma-v22-foldK` (`--variant
2mm-cv-tc-noenh-fluid2-topk-tversky8`: the Tversky index), the three averaged
(`brats-glioma-soup-v9-v18-v22-foldK`) and stage 2's rounds `brats-glioma-cascade-et-v10-/v11-/v12-foldK`.

`--with-all` then makes the shipped form as well: each fold of the last round converted to fp16
(`RUNS/fp16`), their ensemble with the protocol (`ensemble --validate-on`, about 15-20 minutes), the
same steps trained on all 32 cases (`--fold all`, each from the last step's `-all` model, the
first from the shipped `brats-glioma-v9-all`; the last with `--figures-from` that ensemble) in
`RUNS/all`, and the last converted to fp16 in `RUNS/default`. The `-all` steps look for bundles in
`RUNS/all/models` only, which links the fold averages (stage 2's guides for each case come from
the average that held it out) but not the fold cascades, so that no step before the last segments
the pooled held-out cases again for figures it does not keep.

A finished bundle is skipped and a stopped training resumes from its run folder's checkpoint, so
the same command continues after an interruption. `--until soup` stops after the stage-1 averages,
`--until TAG` after that round of stage 2. About 15-20 minutes a fold a step on a 2-core CPU
(docs/training.md), about 4.5 hours in all (about 3.3 on stop 54's Intel Xeon with AMX).

Run: python Resources/Scripts/rebuild_default_folds.py --data ../shared/real-cases --out RUNS
     [--design topk|plain|tversky3] [--until soup|TAG] [--folds 0 1 2 3 4] [--with-all]
"""
from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
from typing import Dict, List, Sequence, Tuple

Tune = Tuple[str, str]  # stage 1's fine-tune of v9: tag, variant
Round = Tuple[str, str, int]  # stage 2's round: tag, variant, seed

_V18: Tune = ("v18", "2mm-cv-tc-noenh-fluid2-topk")
# design: stage 1's fine-tunes (averaged with v9, in this order), stage 2's rounds
DESIGNS: Dict[str, Tuple[Sequence[Tune], Sequence[Round]]] = {
    "plain": ((("v12", "2mm-cv-tc-noenh-fluid2"),),
              (("v3", "1mm-cascade-et-soup-cv", 0), ("v4", "1mm-cascade-et-soup-long", 1),
               ("v5", "1mm-cascade-et-soup-longer", 2))),
    "topk": ((_V18,),
             (("v7", "1mm-cascade-et-topk-cv", 0), ("v8", "1mm-cascade-et-topk-long", 1),
              ("v9", "1mm-cascade-et-topk-longer", 2))),
    "tversky3": ((_V18, ("v22", "2mm-cv-tc-noenh-fluid2-topk-tversky8")),
                 (("v10", "1mm-cascade-et-tversky3-cv", 0), ("v11", "1mm-cascade-et-tversky3-long", 1),
                  ("v12", "1mm-cascade-et-tversky3-longer", 2))),
}


def _soup(tunes: Sequence[Tune], member: str) -> str:
    """The name of stage 1: v9 and the fine-tunes averaged (``member``: foldK or all)."""
    return "brats-glioma-soup-" + "-".join(["v9", *(tag for tag, _ in tunes)]) + f"-{member}"


def _run(cmd: List[str], log_path: str, env: dict) -> None:
    with open(log_path, "a", encoding="utf-8") as log:
        done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    if done.returncode:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}; see {log_path}")


def _made(bundle: str) -> bool:
    """Whether a bundle folder is finished (its manifest is written last)."""
    return os.path.exists(os.path.join(bundle, "manifest.json"))


def _train(out: str, bundle: str, runs: str, args: List[str], recipe: List[str], logs: str, env: dict) -> None:
    """One ``train-recipe`` step (``args``: variant, fold, seed, cache) exporting ``bundle``, its run
    folder in ``runs``; skipped when the bundle is finished, resumed from its run folder otherwise."""
    if _made(bundle):
        return
    name = os.path.basename(bundle)
    _note(out, f"{name} start")
    _run([*recipe, *args, "--out", os.path.join(runs, name), "--export", bundle], os.path.join(logs, f"{name}.log"), env)
    _note(out, f"{name} done")


def _note(out: str, text: str) -> None:
    line = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%dT%H:%M:%SZ} {text}"
    print(line, flush=True)
    with open(os.path.join(out, "progress"), "a", encoding="utf-8") as f:
        f.write(line + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="the shared real cases (../shared/real-cases)")
    ap.add_argument("--out", required=True, help="folder for run folders, bundles, caches and logs")
    ap.add_argument("--design", choices=sorted(DESIGNS), default="topk")
    ap.add_argument("--until", choices=["soup"] + [r[0] for _, rounds in DESIGNS.values() for r in rounds],
                    help="the last step: soup, or a round of stage 2 of the design (default: its last)")
    ap.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--with-all", action="store_true",
                    help="then the protocol on the last round's folds and the design trained on all 32 cases")
    args = ap.parse_args()
    tunes, stage2 = DESIGNS[args.design]
    until = args.until or stage2[-1][0]
    if until != "soup" and until not in [r[0] for r in stage2]:
        ap.error(f"--until {until}: not a round of the {args.design} design ({', '.join(r[0] for r in stage2)})")
    if args.with_all and (until != stage2[-1][0] or sorted(args.folds) != [0, 1, 2, 3, 4]):
        ap.error(f"--with-all: needs the design's last round ({stage2[-1][0]}) on all five folds")
    out = os.path.abspath(args.out)
    bundles, logs = os.path.join(out, "models"), os.path.join(out, "logs")
    os.makedirs(bundles, exist_ok=True)
    os.makedirs(logs, exist_ok=True)
    cli = [sys.executable, "-m", "BrainTumorSegLib"]
    recipe = [*cli, "train-recipe", "brats-glioma", "--data", args.data, "--epochs", "4", "--iters", "100"]
    # stage 2's variants find their stage 1 (the averages) and their start (the last round) by name
    env = {**os.environ, "BRAINTUMORSEG_MODELS": bundles}

    for k in args.folds:
        tuned = [os.path.join(bundles, f"brats-glioma-{tag}-fold{k}") for tag, _ in tunes]
        for (_, variant), bundle in zip(tunes, tuned):
            _train(out, bundle, os.path.join(out, "runs"),
                   ["--variant", variant, "--fold", str(k), "--cache", os.path.join(out, "cache2mm")], recipe, logs,
                   env)
        soup = _soup(tunes, f"fold{k}")
        if not _made(os.path.join(bundles, soup)):
            _run([*cli, "average", f"brats-glioma-v9-fold{k}", *tuned, "--out", os.path.join(bundles, soup)],
                 os.path.join(logs, f"{soup}.log"), env)
            _note(out, f"{soup} done")
    for tag, variant, seed in stage2:
        if until == "soup":
            break
        for k in args.folds:
            _train(out, os.path.join(bundles, f"brats-glioma-cascade-et-{tag}-fold{k}"), os.path.join(out, "runs"),
                   ["--variant", variant, "--fold", str(k), "--seed", str(seed), "--cache",
                    os.path.join(out, "cache1mm")], recipe, logs, env)
        if tag == until:
            break
    _note(out, f"done up to {until}")
    if args.with_all:
        _with_all(out, args.data, tunes, stage2, cli, recipe, logs)
    return 0


def _with_all(out: str, data: str, tunes: Sequence[Tune], stage2: Sequence[Round], cli: List[str],
              recipe: List[str], logs: str) -> None:
    """The last round's protocol, then the design on all 32 cases, converted to fp16."""
    bundles, fp16 = os.path.join(out, "models"), os.path.join(out, "fp16")
    last = stage2[-1][0]
    members = [os.path.join(fp16, f"brats-glioma-cascade-et-{last}-fold{k}") for k in range(5)]
    ensemble = os.path.join(fp16, f"brats-glioma-ensemble-cascade-et-{last}")
    env = {**os.environ, "BRAINTUMORSEG_MODELS": bundles}
    for m in members:
        if not _made(m):
            _run([*cli, "convert", os.path.join(bundles, os.path.basename(m)), "--out", m],
                 os.path.join(logs, "convert.log"), env)
    if not _made(ensemble):
        _note(out, f"{os.path.basename(ensemble)} start")
        _run([*cli, "ensemble", *members, "--out", ensemble, "--validate-on", data],
             os.path.join(logs, f"{os.path.basename(ensemble)}.log"), env)
        _note(out, f"{os.path.basename(ensemble)} done")
    every = os.path.join(out, "all", "models")
    os.makedirs(every, exist_ok=True)
    for k in range(5):
        link = os.path.join(every, _soup(tunes, f"fold{k}"))
        if not os.path.lexists(link):
            os.symlink(os.path.join(bundles, os.path.basename(link)), link)
    env = {**os.environ, "BRAINTUMORSEG_MODELS": every}

    def train_all(name: str, args: List[str], cache: str) -> None:
        _train(out, os.path.join(every, name), os.path.join(out, "all", "runs"),
               [*args, "--fold", "all", "--cache", os.path.join(out, cache)], recipe, logs, env)

    for tag, variant in tunes:
        train_all(f"brats-glioma-{tag}-all", ["--variant", variant], "cache2mm")
    soup = os.path.join(every, _soup(tunes, "all"))
    if not _made(soup):
        _run([*cli, "average", "brats-glioma-v9-all", *(os.path.join(every, f"brats-glioma-{tag}-all") for tag, _ in tunes),
              "--out", soup], os.path.join(logs, "soup-all.log"), env)
    for tag, variant, seed in stage2:
        figures = ["--figures-from", ensemble] if tag == last else []
        train_all(f"brats-glioma-cascade-et-{tag}-all", ["--variant", variant, "--seed", str(seed), *figures],
                  "cache1mm")
    name = f"brats-glioma-cascade-et-{last}-all"
    shipped = os.path.join(out, "default", name)
    if not _made(shipped):
        os.makedirs(os.path.dirname(shipped), exist_ok=True)  # convert writes into a folder that exists
        _run([*cli, "convert", os.path.join(every, name), "--out", shipped], os.path.join(logs, "convert.log"), env)
    _note(out, f"{shipped}: the design on all 32 cases, fp16, with its folds' figures")


if __name__ == "__main__":
    sys.exit(main())
