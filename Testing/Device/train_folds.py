"""Train the five folds of a recipe variant at once on one GPU, from a pack, and leave what comes back.

Not a pytest test: run on a lent GPU machine, from the repository root, with the pack carried
along (docs/training.md, "On a lent GPU machine"):

    python3 Testing/Device/train_folds.py --pack pack --variant 2mm-cv-tc-nnaug --epochs 28 --iters 100 --out $OUT

With ``--probe P`` every fold first trains P iterations (a throw-away run, all folds at once as
the real runs will be), and the real runs get as many epochs (at most ``--epochs``) as the slowest
fold's measured speed fits before the deadline: a fold stopped at the deadline keeps weights from
the middle of its schedule, which are poorer.

Each fold (``--folds 0 1 2 3 4 all``) is its own ``train-recipe`` process (the GPU holds them
all; ``--workers`` processes each prepare its patches). What is written to ``--out`` fits what a device call brings back (at most
eight files of 16 MiB): ``foldK.pt`` (``all.pt``), each fold's weights in fp16 with its history, and one
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
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, TextIO

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from BrainTumorSegLib.recipes.brats_glioma import member as name  # noqa: E402  (fold3, all: as the recipe names them)


@dataclass
class Run:
    """One fold's ``train-recipe`` process, its log, and when each of its progress lines (one an
    iteration) arrived."""
    proc: subprocess.Popen
    log: TextIO
    cmd: List[str]
    times: List[float] = field(default_factory=list)
    reader: Optional[threading.Thread] = None

    def follow(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("progress "):
                self.times.append(time.perf_counter())
            self.log.write(line)

    def close(self) -> None:
        """After the process ended: the rest of its output read, the log closed."""
        if self.reader is not None:
            self.reader.join()
        self.log.close()


def launch(args: argparse.Namespace, folds: Sequence[str], epochs: int, iters: int, runs: str,
           env: Dict[str, str]) -> Dict[str, Run]:
    """One ``train-recipe`` process per fold, its output in ``runs/NAME.log``."""
    procs = {}
    for k in folds:
        cmd = [sys.executable, "-m", "BrainTumorSegLib", "train-recipe", "brats-glioma", "--data", args.pack,
               "--variant", args.variant, "--fold", k, "--epochs", str(epochs), "--iters",
               str(iters), "--seed", str(args.seed), "--workers", str(args.workers),
               "--out", os.path.join(runs, name(k))] + (["--amp"] if args.amp else [])
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=ROOT, text=True)
        run = Run(proc, open(os.path.join(runs, f"{name(k)}.log"), "w"), cmd)
        run.reader = threading.Thread(target=run.follow, daemon=True)
        run.reader.start()
        procs[k] = run
    return procs


def rate(times: List[float]) -> Optional[float]:
    """Iterations a second over the second half of a probe's progress lines (one a iteration)."""
    if len(times) < 8:
        return None
    half = times[len(times) // 2:]
    return (len(half) - 1) / (half[-1] - half[0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pack", required=True)
    ap.add_argument("--variant", required=True)
    ap.add_argument("--epochs", type=int, required=True, help="epochs (with --probe: at most)")
    ap.add_argument("--iters", type=int, required=True)
    ap.add_argument("--out", required=True, help="where the fold checkpoints and the log go ($OUT on the device)")
    ap.add_argument("--folds", nargs="+", default=["0", "1", "2", "3", "4"], help="fold numbers, or all")
    ap.add_argument("--workers", type=int, default=2, help="patch processes per fold")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--amp", action="store_true")
    ap.add_argument("--probe", type=int, default=0, help="iterations each fold trains first to measure its speed; "
                                                         "then as many epochs as fit before the deadline")
    ap.add_argument("--runs", help="run folders (default: a temporary folder, removed at the end)")
    ap.add_argument("--deadline", type=float, default=540, help="seconds after which running folds are stopped and "
                                                                "their last finished epoch is kept (default 540)")
    args = ap.parse_args()
    from BrainTumorSegLib.training.checkpoint import COMPACT, LAST, compact_checkpoint, load_checkpoint

    args.folds = sorted(set(args.folds))
    args.pack = os.path.abspath(args.pack)  # the folds run from the repository root
    os.makedirs(args.out, exist_ok=True)
    runs = args.runs or tempfile.mkdtemp(prefix="folds-")
    # the GPU does the arithmetic: each fold's own process needs few threads beside its patch workers
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONUNBUFFERED="1",
               BRAINTUMORSEG_PROGRESS="lines", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    t0 = time.perf_counter()
    epochs, probed = args.epochs, ""
    if args.probe:
        os.makedirs(os.path.join(runs, "probe"))
        probe = launch(args, args.folds, 1, args.probe, os.path.join(runs, "probe"), env)
        for r in probe.values():
            r.proc.wait()
            r.close()
        speeds = [rate(r.times) for r in probe.values()]
        if any(v is None for v in speeds):
            print(f"the probe failed: see {runs}/probe", file=sys.stderr)
            return 1
        startup = max(r.times[0] for r in probe.values()) - t0  # launch to the first iteration done
        left = args.deadline - (time.perf_counter() - t0) - startup - 30  # 30 s: the export, a margin
        epochs = max(1, min(args.epochs, int(min(v for v in speeds if v) * left / args.iters)))
        probed = (f"probe: {args.probe} iterations, {', '.join(f'{v:.1f}' for v in speeds if v)} it/s, startup "
                  f"{startup:.0f} s, {time.perf_counter() - t0:.0f} s in all: {epochs} epochs of {args.iters}\n")
        print(probed, end="", flush=True)
    procs = launch(args, args.folds, epochs, args.iters, runs, env)
    while any(r.proc.poll() is None for r in procs.values()) and time.perf_counter() - t0 < args.deadline:
        time.sleep(2)
    stopped = [k for k, r in procs.items() if r.proc.poll() is None]
    for k in stopped:
        procs[k].proc.terminate()
    failed, partial = [], []
    for k, r in procs.items():
        p = r.proc
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        r.close()
        run = os.path.join(runs, name(k))
        src = os.path.join(run, COMPACT)
        if k in stopped and os.path.exists(os.path.join(run, LAST)):
            compact_checkpoint(os.path.join(run, LAST), src, {"amp": args.amp})
            partial.append(f"fold {k} after epoch {load_checkpoint(src)['epoch'] + 1} of {epochs}")
        if (p.returncode == 0 or k in stopped) and os.path.exists(src):
            shutil.copy(src, os.path.join(args.out, f"{name(k)}.pt"))
        else:
            failed.append(k)
    with open(os.path.join(args.out, "folds.log"), "w") as out:
        out.write(probed + f"{len(args.folds)} folds in {time.perf_counter() - t0:.0f} s; failed: {failed or 'none'}; "
                  f"stopped at the deadline: {', '.join(partial) or 'none'}\n")
        for k, r in procs.items():
            with open(os.path.join(runs, f"{name(k)}.log")) as f:
                lines = [ln for ln in f.read().splitlines() if not ln.startswith("progress ")]
            out.write(f"\n== fold {k}: rc {r.proc.returncode}: {' '.join(r.cmd)}\n" + "\n".join(lines[-60:]) + "\n")
            csv = os.path.join(runs, name(k), "log.csv")
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
