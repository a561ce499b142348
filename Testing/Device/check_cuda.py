"""Run the CUDA paths CI cannot run (it has no GPU) and print what they did.

Not a pytest test: run by hand on a machine with an NVIDIA GPU, from the repository root:

    python Testing/Device/check_cuda.py --work /tmp/cuda-check [--json report.json]

Checks, each independent (one failing does not stop the others):
1. ``segment`` on the sample case on the CPU (fp32) and on CUDA (fp16 autocast, with and without
   mirroring): Dice against the expert labels, voxel agreement CUDA vs CPU, wall time per process.
2. The out-of-memory fallback: ``segment`` in fresh processes whose CUDA allocator is capped
   (``torch.cuda.set_per_process_memory_fraction``) at several sizes; which fallback each took and
   whether its labels equal the uncapped CUDA labels.
3. A mixed-precision (fp16 + GradScaler) training run of every network on CUDA, then ``segment`` on
   CUDA with the exported bundle (the DM-DA cascade's locate-then-window path included); one run with
   gradient checkpointing; one under ``torchrun`` (NCCL); ``finetune`` of the default model.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLE = os.path.join(ROOT, "Resources", "Samples", "Brats18_TCIA01_231_1")
CLI = [sys.executable, "-m", "BrainTumorSegLib"]
sys.path.insert(0, ROOT)  # the checkout's library in this process too, whatever PYTHONPATH names (the kit)
DEVICE = os.environ.get("CHECK_DEVICE", "cuda")  # the training check alone can be dry-run on "cpu"


def run(cmd: List[str], log: List[Dict], name: str, timeout: int = 300) -> Dict:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
        rc, out = p.returncode, (p.stdout + p.stderr)
    except subprocess.TimeoutExpired as e:
        rc, out = 124, f"timed out: {e}"
    rec = {"name": name, "rc": rc, "seconds": round(time.perf_counter() - t, 1), "tail": out[-1500:]}
    log.append(rec)
    print(f"== {name}: rc {rc}, {rec['seconds']} s\n{out[-1500:]}", flush=True)
    return rec


def labels(path: str):
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(path))


def agreement(a: str, b: str) -> float:
    x, y = labels(a), labels(b)
    return float((x == y).mean())


def check_segment(work: str, log: List[Dict]) -> Dict:
    ref = os.path.join(SAMPLE, "Brats18_TCIA01_231_1_seg.nii.gz")
    out = {}
    for name, extra in [("cpu-fp32", ["--device", "cpu"]), ("cuda-fp16", ["--device", "cuda"]),
                        ("cuda-fp16-again", ["--device", "cuda"]), ("cuda-fp16-tta", ["--device", "cuda", "--tta"])]:
        path = os.path.join(work, f"{name}.nii.gz")
        rep = os.path.join(work, f"{name}.json")
        rec = run(CLI + ["segment", "--case", SAMPLE, "-o", path, "--report", rep, "--reference-labels", ref]
                  + extra, log, f"segment {name}")
        if rec["rc"] == 0:
            r = json.load(open(rep))
            out[name] = {"seconds_process": rec["seconds"], "device": r["device"], "timings_s": r["timings_s"],
                         "warnings": r["warnings"], "against_reference": r.get("against_reference")}
    cpu = os.path.join(work, "cpu-fp32.nii.gz")
    for name in ("cuda-fp16", "cuda-fp16-tta"):
        p = os.path.join(work, f"{name}.nii.gz")
        if os.path.exists(cpu) and os.path.exists(p):
            out[name]["agreement_with_cpu_fp32"] = agreement(cpu, p)
    return out


OOM_CHILD = r"""
import sys, json, torch
sys.path.insert(0, sys.argv[1])
import BrainTumorSegLib as B
total = torch.cuda.get_device_properties(0).total_memory
torch.cuda.set_per_process_memory_fraction(float(sys.argv[2]) / total, 0)
import SimpleITK as sitk
case = sys.argv[3]
ins = {r: f"{case}/Brats18_TCIA01_231_1_{r}.nii.gz" for r in ("t1", "t1ce", "t2", "flair")}
res = B.segment(ins, device="cuda")
sitk.WriteImage(res.labels, sys.argv[4])
print(json.dumps({"device": res.device, "warnings": res.warnings,
                  "max_allocated_MiB": torch.cuda.max_memory_allocated() / 2 ** 20}))
"""


def check_oom(work: str, log: List[Dict]) -> Dict:
    out = {}
    ref = os.path.join(work, "cuda-fp16.nii.gz")
    if not os.path.exists(ref):  # run with --only oom
        run(CLI + ["segment", "--case", SAMPLE, "-o", ref, "--device", "cuda"], log, "segment cuda uncapped")
    # brats-glioma-v1 peaked near 87 MiB; the cascade default still fell back to the CPU at 128 MiB
    caps = os.environ.get("CHECK_OOM_MIB", "16,64,128,256,1024")
    for mib in (int(c) for c in caps.split(",")):
        path = os.path.join(work, f"oom-{mib}.nii.gz")
        rec = run([sys.executable, "-c", OOM_CHILD, ROOT, str(mib * 2 ** 20), SAMPLE, path], log, f"oom cap {mib} MiB")
        entry = {"rc": rec["rc"]}
        lines = [ln for ln in rec["tail"].splitlines() if ln.startswith("{")]
        if rec["rc"] == 0 and lines:
            entry.update(json.loads(lines[-1]))
            if os.path.exists(ref):
                entry["agreement_with_uncapped_cuda"] = agreement(ref, path)
        out[f"{mib}MiB"] = entry
    return out


def make_data(work: str) -> str:
    """Two copies of the sample case under two case ids: enough for the mechanics of a run."""
    data = os.path.join(work, "data")
    for k in (1, 2):
        cid = f"Brats18_TCIA01_231_{k}"
        d = os.path.join(data, cid)
        os.makedirs(d, exist_ok=True)
        for f in os.listdir(SAMPLE):
            if f.endswith(".nii.gz"):
                shutil.copy(os.path.join(SAMPLE, f), os.path.join(d, f.replace("Brats18_TCIA01_231_1", cid)))
    return data


def check_training(work: str, log: List[Dict]) -> Dict:
    data = make_data(work)
    out = {}
    common = ["--data", data, "--val", data, "--epochs", "1", "--iters", "6", "--patch", "64", "64", "64",
              "--batch", "2", "--amp", "--device", DEVICE]
    runs = [(n, ["train", "--network", n], []) for n in ("resunet", "agse_vnet", "cga_unet", "dmda_unet")]
    runs.append(("resunet-checkpointing", ["train", "--network", "resunet", "--gradient-checkpointing"], []))
    # what the Slicer module fine-tunes from the default: the model itself, or an ensemble's first member
    from BrainTumorSegLib.models import bundles, ensembles
    first = ensembles.members(bundles.DEFAULT_MODEL)[0]
    runs.append(("finetune-default", ["finetune", "--from", first], []))
    for name, head, _ in runs:
        run_dir = os.path.join(work, f"run-{name}")
        rec = run(CLI + head + common + ["--out", run_dir], log, f"train {name}", timeout=400)
        entry = {"rc": rec["rc"], "seconds": rec["seconds"]}
        bundle = os.path.join(run_dir, "model")
        if rec["rc"] == 0 and os.path.isdir(bundle):
            seg = run(CLI + ["segment", "--case", SAMPLE, "-o", os.path.join(work, f"seg-{name}.nii.gz"),
                             "--model", bundle, "--device", DEVICE], log, f"segment with {name}")
            entry["segment_rc"] = seg["rc"]
        out[name] = entry
    run_dir = os.path.join(work, "run-torchrun")
    rec = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m",
               "BrainTumorSegLib", "train", "--network", "resunet"] + common + ["--out", run_dir], log,
              "torchrun train resunet (NCCL)", timeout=400)
    out["torchrun-nccl"] = {"rc": rec["rc"], "seconds": rec["seconds"],
                            "bundle": os.path.isdir(os.path.join(run_dir, "model"))}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True, help="scratch folder (emptied first)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--only", choices=["segment", "oom", "training"], action="append")
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    log: List[Dict] = []
    import torch

    results: Dict = {"torch": torch.__version__, "cuda": torch.version.cuda,
                     "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    print(json.dumps(results), flush=True)
    run(CLI + ["devices"], log, "devices")
    checks = {"segment": check_segment, "oom": check_oom, "training": check_training}
    for name in a.only or list(checks):
        try:
            results[name] = checks[name](a.work, log)
        except Exception as e:  # one check's failure must not hide the others' results
            results[name] = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps({name: results[name]}, indent=1), flush=True)
    results["log"] = log
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
