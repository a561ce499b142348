"""Train the five folds of a recipe variant at once on one GPU, from a pack, and leave what comes back.

Not a pytest test: run on a lent GPU machine, from the repository root, with the pack carried
along (docs/training.md, "On a lent GPU machine"):

    python3 Testing/Device/train_folds.py --pack pack --variant 2mm-cv-tc-nnaug --epochs 28 --iters 100 --out $OUT

Each fold is its own ``train-recipe`` process (the GPU holds all five; ``--workers`` processes each
prepare its patches). What is written to ``--out`` fits what a device call brings back (at most
eight files of 16 MiB): ``foldK.pt``, each fold's weights in fp16 with its history, and one
``folds.log``. A fold still running at ``--deadline`` is stopped and its last finished epoch (for
a variant that averages its weights, their average so far) comes back instead (``folds.log`` says
which). Back here, each is validated and exported with
``train-recipe brats-glioma --data CASES --variant V --fold K --epochs E --iters I --out RUN
--from-checkpoint foldK.pt``.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pack", required=True)
    ap.add_argument("--variant", required=True)
    ap.add_argument("--epochs", type=int, required=True)
    ap.add_argument("--iters", type=int, required=True)
    ap.add_argument("--out", required=True, help="where the fold checkpoints and the log go ($OUT on the device)")
    ap.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--workers", type=int, default=2, help="patch processes per fold")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--amp", action="store_true")
    ap.add_argument("--runs", help="run folders (default: a temporary folder, removed at the end)")
    ap.add_argument("--deadline", type=float, default=540, help="seconds after which running folds are stopped and "
                                                                "their last finished epoch is kept (default 540)")
    args = ap.parse_args()
    from BrainTumorSegLib.training.checkpoint import COMPACT, LAST, compact_checkpoint, load_checkpoint

    args.folds = sorted(set(args.folds))
    args.pack = os.path.abspath(args.pack)  # the folds run from the repository root
    os.makedirs(args.out, exist_ok=True)
    runs = args.runs or tempfile.mkdtemp(prefix="folds-")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONUNBUFFERED="1",
               BRAINTUMORSEG_PROGRESS="lines")
    t0 = time.perf_counter()
    procs = {}
    for k in args.folds:
        cmd = [sys.executable, "-m", "BrainTumorSegLib", "train-recipe", "brats-glioma", "--data", args.pack,
               "--variant", args.variant, "--fold", str(k), "--epochs", str(args.epochs), "--iters",
               str(args.iters), "--seed", str(args.seed), "--workers", str(args.workers),
               "--out", os.path.join(runs, f"fold{k}")] + (["--amp"] if args.amp else [])
        log = open(os.path.join(runs, f"fold{k}.log"), "w")
        procs[k] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT), log, cmd)
    while any(p.poll() is None for p, _, _ in procs.values()) and time.perf_counter() - t0 < args.deadline:
        time.sleep(2)
    stopped = [k for k, (p, _, _) in procs.items() if p.poll() is None]
    for k in stopped:
        procs[k][0].terminate()
    failed, partial = [], []
    for k, (p, log, _) in procs.items():
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log.close()
        run = os.path.join(runs, f"fold{k}")
        src = os.path.join(run, COMPACT)
        if k in stopped and os.path.exists(os.path.join(run, LAST)):
            compact_checkpoint(os.path.join(run, LAST), src, {"amp": args.amp})
            partial.append(f"fold {k} after epoch {load_checkpoint(src)['epoch'] + 1} of {args.epochs}")
        if (p.returncode == 0 or k in stopped) and os.path.exists(src):
            shutil.copy(src, os.path.join(args.out, f"fold{k}.pt"))
        else:
            failed.append(k)
    with open(os.path.join(args.out, "folds.log"), "w") as out:
        out.write(f"{len(args.folds)} folds in {time.perf_counter() - t0:.0f} s; failed: {failed or 'none'}; "
                  f"stopped at the deadline: {', '.join(partial) or 'none'}\n")
        for k, (p, _, cmd) in procs.items():
            with open(os.path.join(runs, f"fold{k}.log")) as f:
                lines = [ln for ln in f.read().splitlines() if not ln.startswith("progress ")]
            out.write(f"\n== fold {k}: rc {p.returncode}: {' '.join(cmd)}\n" + "\n".join(lines[-60:]) + "\n")
            csv = os.path.join(runs, f"fold{k}", "log.csv")
            if os.path.exists(csv):
                with open(csv) as f:
                    out.write(f.read())
    if not args.runs:
        shutil.rmtree(runs, ignore_errors=True)
    print(f"{len(args.folds) - len(failed) - len(partial)} of {len(args.folds)} folds trained to the end, "
          f"{len(partial)} stopped early; see {args.out}/folds.log")
    return 1 if failed or partial else 0


if __name__ == "__main__":
    sys.exit(main())
