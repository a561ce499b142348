"""The ``braintumorseg`` command line (also ``python -m BrainTumorSegLib``).

Bad input ends with one line ``braintumorseg: error: <file>: <problem>`` and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Dict, List, NamedTuple, Optional, Tuple

from . import __version__, progress, segment_options
from .cases import SEQUENCES
from .errors import Cancelled, InputError

if TYPE_CHECKING:
    import SimpleITK as sitk

    from .inference import Models
    from .segment_options import SegmentOptions

PROG = "braintumorseg"


def _cmd_phantom(args: argparse.Namespace) -> int:
    from .phantom import generate

    if args.n < 1:
        raise InputError(None, "--n must be at least 1")
    t0 = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if not args.quiet:
            print(f"\r[phantom] {done}/{total} cases", end="" if done < total else "\n", file=sys.stderr)

    folders = generate(args.outdir, args.n, args.seed, args.start, progress)
    print(f"wrote {len(folders)} synthetic cases (BraTS 2021 layout, labels 0/1/2/4) to {args.outdir} "
          f"in {time.perf_counter() - t0:.1f} s")
    for f in folders[:5]:
        print(f"  {f}")
    if len(folders) > 5:
        print(f"  ... and {len(folders) - 5} more")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate, format_table, write_outputs

    results = evaluate(args.pred, args.ref, args.hd95, args.pred_scheme, args.ref_scheme)
    write_outputs(results, args.csv, args.json, args.hd95)
    print(format_table(results))
    print(f"HD95 in mm ({args.hd95} definition); per-case CSV: {args.csv}; summary JSON: {args.json}")
    return 0


def _cmd_networks(args: argparse.Namespace) -> int:
    import torch

    from .networks import NETWORKS, build
    from .networks.flops import count_flops, count_parameters

    if args.threads:
        torch.set_num_threads(args.threads)
    shape = (1, 4) + (args.size,) * 3
    print(f"{'network':<12}{'output':<10}{'params (M)':>12}{'GFLOPs':>10}{'CPU fwd (s)':>13}  patch (z,y,x)  paper")
    for name in NETWORKS:
        net = build(name).eval()
        params = count_parameters(net) / 1e6
        gflops = count_flops(net, shape) / 1e9
        if args.no_time:
            secs = "-"
        else:
            x = torch.randn(*shape)
            with torch.inference_mode():
                t0 = time.perf_counter()
                net(x)
                secs = f"{time.perf_counter() - t0:.2f}"
        print(f"{name:<12}{net.output_kind:<10}{params:>12.3f}{gflops:>10.1f}{secs:>13}  "
              f"{'x'.join(map(str, net.patch_size)):<14} {net.paper}")
    print(f"GFLOPs and forward time for one {'x'.join(map(str, shape[1:]))} input, fp32, "
          f"{torch.get_num_threads()} threads; FLOPs counted as multiply-accumulates of convs and matrix products "
          "(the CGA U-Net paper's convention); dmda_unet is timed on stage 2, which runs on 128^3 cubes.")
    return 0


def _train_config(args: argparse.Namespace, network: str = "resunet", options: Optional[dict] = None):
    """The options ``train`` and ``finetune`` share (finetune takes network and options from its bundle)."""
    from .training import TrainConfig

    return TrainConfig(network=network, options=options or {}, epochs=args.epochs, iters_per_epoch=args.iters,
                       batch=args.batch, patch=tuple(args.patch) if args.patch else None, lr=args.lr,
                       seed=args.seed, val_every=args.val_every, workers=args.workers, amp=args.amp,
                       domain_randomization=args.domain_randomization, device=args.device,
                       gradient_checkpointing=args.gradient_checkpointing,
                       clinical_augmentation=args.clinical_augmentation)


def _split(args: argparse.Namespace):
    from .cases import find_cases
    from .training import check_cases

    cases = check_cases(find_cases(args.data), args.skip_bad)
    if args.val:
        return cases, check_cases(find_cases(args.val), args.skip_bad)
    if args.folds:
        if not 0 <= args.fold < args.folds:
            raise InputError(None, f"--fold must be in 0..{args.folds - 1}")
        val = [c for i, c in enumerate(cases) if i % args.folds == args.fold]
        return [c for c in cases if c not in val], val
    return cases, []


def _cmd_train(args: argparse.Namespace) -> int:
    from .training import train

    train_cases, val_cases = _split(args)
    options = json.loads(args.options) if args.options else {}
    out = train(_train_config(args, args.network, options), train_cases, val_cases, args.out, resume=args.resume)
    print(f"model bundle: {out}")
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    from .cases import find_cases
    from .training import check_cases, finetune

    train_cases, val_cases = _split(args)
    replay = check_cases(find_cases(args.replay), args.skip_bad) if args.replay else []
    cfg = _train_config(args)
    cfg.freeze_encoder = args.freeze_encoder
    cfg.replay_fraction = args.replay_fraction if replay else 0.0
    out = finetune(args.model, train_cases, val_cases, args.out, cfg, replay, resume=args.resume)
    print(f"model bundle: {out}")
    return 0


def _cmd_train_demo(args: argparse.Namespace) -> int:
    """The recipe of the shipped demo model, end to end."""
    from .recipes import train_demo

    out = train_demo(args.workdir, args.out, n_train=args.n_train, n_val=args.n_val, n_test=args.n_test,
                     epochs=args.epochs, iters=args.iters)
    print(f"demo model bundle: {out}")
    return 0


def _cmd_train_recipe(args: argparse.Namespace) -> int:
    """A named real-data recipe: fixed split, training (resumable), validation through segment."""
    from .real_recipe import export_checkpoint, export_folder, train_real

    if args.from_checkpoint:
        out = export_checkpoint(args.data, args.out, args.from_checkpoint,
                                args.export or export_folder(args.out, args.variant), variant=args.variant,
                                epochs=args.epochs, iters=args.iters, seed=args.seed)
    else:
        out = train_real(args.data, args.out, variant=args.variant, epochs=args.epochs, iters=args.iters,
                         seed=args.seed, resume=True, export=args.export, cache_dir=args.cache,
                         init_from=args.init_from)
    print(f"model bundle: {out}")
    return 0


class _ProgressBar:
    """One line on stderr: stage and percentage. With ``BRAINTUMORSEG_PROGRESS=lines`` (set by the
    Slicer module, which runs this command in the background) it prints ``progress STAGE FRACTION``
    lines on stdout instead."""

    def __init__(self, enabled: bool) -> None:
        self.lines = progress.lines_wanted()
        self.enabled = enabled and sys.stderr.isatty()
        self.last = ""

    def __call__(self, stage: str, fraction: float) -> None:
        if self.lines:
            print(progress.format_line(stage, fraction), flush=True)
            return
        if not self.enabled:
            return
        width = 30
        filled = int(round(fraction * width))
        line = f"\r[{'#' * filled}{'.' * (width - filled)}] {fraction:4.0%} {stage:<16}"
        if line != self.last:
            print(line, end="", file=sys.stderr, flush=True)
            self.last = line
        if stage == "done":
            print("", file=sys.stderr)


class _Job(NamedTuple):
    """One case to segment: its inputs and where each output goes."""

    case_id: str
    inputs: Dict[str, str]
    output: str
    uncertainty: Optional[str] = None
    report: Optional[str] = None
    brain_mask: Optional[str] = None


def _check_job(job: _Job, reference_labels: Optional[str]) -> Optional["sitk.Image"]:
    """Inputs readable (headers), outputs writable, distinct and none of them an input, expert
    labels on the T1ce grid (returned): before anything slow."""
    from .imageio import check_image_file, check_not_input, check_output_path

    for path in job.inputs.values():
        check_image_file(path)
    outputs = [p for p in (job.output, job.uncertainty, job.brain_mask, job.report) if p]
    for path in outputs:
        check_output_path(path, image=path != job.report)
        check_not_input(path, job.inputs.values())
    real = [os.path.realpath(p) for p in outputs]
    for path, r in zip(outputs, real):
        if real.count(r) > 1:
            raise InputError(path, "is given for two outputs; give each its own file")
    return _read_reference(reference_labels, job.inputs.get("t1ce")) if reference_labels else None


def _not_a_file(path: str, option: str, needed: str) -> None:
    if os.path.isfile(path):
        raise InputError(path, f"is a file; {option} needs {needed}")


def _cases_jobs(args: argparse.Namespace) -> List[_Job]:
    """``--cases``: every case of the folder, outputs named by case id in the ``-o`` folder."""
    from .cases import find_cases

    _not_a_file(args.cases, "--cases", "a folder of case folders (for one case folder use --case)")
    if not os.path.isdir(args.output):
        raise InputError(args.output, "is not a folder; with --cases, -o names an existing folder for the results")
    cases = find_cases(args.cases)
    if not cases:
        raise InputError(args.cases, "holds no cases")

    def out(case_id: str, suffix: str, wanted: Optional[str]) -> Optional[str]:
        return os.path.join(args.output, case_id + suffix) if wanted else None

    return [_Job(c.case_id, c.require().sequences, os.path.join(args.output, f"{c.case_id}.nii.gz"),  # BraTS naming
                 out(c.case_id, "_uncertainty.nii.gz", args.uncertainty), out(c.case_id, "_report.json", args.report),
                 out(c.case_id, "_brainmask.nii.gz", args.brain_mask)) for c in cases]


def _segment_jobs(args: argparse.Namespace) -> List[Tuple[_Job, Optional["sitk.Image"]]]:
    """The cases to segment (from ``--case``, ``--cases`` or the four files), each checked, with
    its expert labels when given."""
    from .cases import find_case

    given = {r: getattr(args, r) for r in SEQUENCES if getattr(args, r)}
    if sum([bool(args.case), bool(args.cases), bool(given)]) != 1:
        raise InputError(None, "give the four sequences (--t1 --t1ce --t2 --flair), or --case DIR, or --cases DIR")
    if args.cases:
        jobs = _cases_jobs(args)
    else:
        case_id, inputs = "case", given
        if args.case:
            _not_a_file(args.case, "--case", "a case folder (for single files give --t1, --t1ce, --t2 and --flair)")
            case = find_case(args.case).require()
            case_id, inputs = case.case_id, case.sequences
        if os.path.isdir(args.output):
            raise InputError(args.output, "is a folder; -o takes a file name, e.g. "
                                          f"{os.path.join(args.output, case_id + '_seg.nii.gz')} (a folder is for --cases)")
        jobs = [_Job(case_id, inputs, args.output, args.uncertainty, args.report, args.brain_mask)]
    return [(job, _check_job(job, args.reference_labels)) for job in jobs]


def _segment_one(job: _Job, reference: Optional["sitk.Image"], args: argparse.Namespace,
                 opts: "SegmentOptions", models: "Models") -> dict:
    from .atomicfile import write_json
    from .imageio import write_image
    from .inference import segment

    res = segment(job.inputs, models, options=opts, progress=_ProgressBar(not args.quiet))
    inputs = list(job.inputs.values())
    # all outputs are computed before any is written; each write is atomic
    write_image(res.labels, job.output, inputs)
    if job.uncertainty:
        assert res.uncertainty is not None  # asked for through SegmentOptions(uncertainty=True)
        write_image(res.uncertainty, job.uncertainty, inputs)
    if job.brain_mask:
        assert res.brain_mask is not None  # asked for through SegmentOptions(brain_mask=True)
        write_image(res.brain_mask, job.brain_mask, inputs)
    rep = dict(res.report(), inputs=job.inputs, output=job.output)
    if reference is not None:
        rep["against_reference"] = _score_against(res, reference, args.reference_labels)
        print("against the reference labels: " + ", ".join(
            f"{r} Dice {rep['against_reference'][r]['dice']:.3f} HD95 {rep['against_reference'][r]['hd95_mm']:.1f} mm"
            for r in ("WT", "TC", "ET")))
    if job.report:
        write_json(job.report, rep, inputs)
    for w in res.warnings:
        print(f"{PROG}: warning: {w}", file=sys.stderr)
    v = res.volumes_ml
    print(f"{job.output}: WT {v['WT']:.1f} mL, TC {v['TC']:.1f} mL, ET {v['ET']:.1f} mL "
          f"(NCR {v['NCR']:.1f}, ED {v['ED']:.1f}); {res.timings['total']:.1f} s on {res.device} "
          f"with {models.description}")
    return rep


def _read_reference(path: str, t1ce: Optional[str]):
    """Expert labels to compare the result with, checked before any work: labels, on the T1ce grid."""
    import SimpleITK as sitk

    from .imageio import read_image, same_grid
    from .labels import detect_scheme

    img = read_image(path, "label")
    detect_scheme(sitk.GetArrayViewFromImage(img), path)
    if t1ce and not same_grid(img, read_image(t1ce)):
        raise InputError(path, "is not on the grid of the T1ce image; cannot compare")
    return img


def _score_against(res, reference, path: str) -> dict:
    """Dice and HD95 per region of the result against expert labels on the same grid."""
    from .evaluation import score_images
    from .labels import REGIONS

    m = score_images(res.labels, reference, pred_scheme=res.label_scheme, pred_name="the result", ref_name=path)
    return {"labels": path, **{r: {"dice": m[r]["dice"], "hd95_mm": m[r]["hd95"]} for r in REGIONS}}


def _check_models(names: List[str], jobs: List[_Job]) -> None:
    """Each model's name or folder and its manifests (an ensemble's members' too), and that every
    case has the sequences the first needs: no weights are read."""
    from . import bundles

    manifests = [bundles.read_manifest(f) for name in names for f in bundles.members(name)]
    needed = manifests[0].in_sequences
    for job in jobs:
        missing = [r for r in needed if r not in job.inputs]
        if missing:
            raise InputError(f"--{missing[0]}", f"the model {manifests[0].id} needs {', '.join(needed)}; "
                                                f"no {', '.join(missing)} given")


def _load_models(names: List[str]) -> "Models":
    """The models, loaded once for every case; each one's research or demo note on stderr, named
    as asked for (an ensemble with its members)."""
    from .inference import load_ensemble

    models = load_ensemble(names)
    said = set()  # an ensemble's members often share their note
    for part in models.parts:
        who = part.id + (f" (ensemble of {', '.join(b.id for b in part.bundles)})" if part.ensemble else "")
        notes = [" is a DEMO trained on synthetic data only; not for clinical use"] if any(
            b.demo for b in part.bundles) else []
        notes += [f": {n}" for n in ([part.note] if part.note else [b.manifest.note for b in part.bundles]) if n]
        for note in notes:
            if note not in said:
                said.add(note)
                print(f"{PROG}: note: model {who}{note}", file=sys.stderr)
    return models


def _cmd_segment(args: argparse.Namespace) -> int:
    """Options, inputs, outputs and models are checked, in that order, before any weights are read."""
    from .bundles import DEFAULT_MODEL

    opts = segment_options.SegmentOptions.from_args(args)
    jobs = _segment_jobs(args)
    names = args.model or [DEFAULT_MODEL]
    _check_models(names, [job for job, _ in jobs])
    from .devices import resolve  # torch: after every quick check

    resolve(opts.device)
    models = _load_models(names)
    for i, (job, reference) in enumerate(jobs):
        _segment_one(job, reference, args, opts, models if i == 0 else models.reused())
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from . import bundles

    found = bundles.installed()
    if not found:
        print("no model bundles found in: " + ", ".join(bundles.search_dirs()))
        return 0
    for m in found:
        if "error" in m:
            print(f"{m['name']:<28} BROKEN: {m['error']}")
            continue
        tag = "DEMO, synthetic data only, not for clinical use" if m.get("demo") else "research use, not clinical"
        if m["name"] == bundles.DEFAULT_MODEL:
            tag = "DEFAULT; " + tag
        metrics = m.get("metrics") or {}
        full = (metrics.get("validation_segment") or {}).get("mean")
        if full:  # held-out cases through the whole segment path
            n = len(metrics["validation_segment"].get("cases", []))
            where, scores = f"{n} held-out cases", full
        elif metrics.get("held_out_synthetic"):
            where, scores = "held-out phantoms", metrics["held_out_synthetic"]
        else:
            where, scores = "validation during training", metrics.get("validation") or {}
        dice = " ".join(f"{k[5:]} {v:.2f}" for k, v in scores.items() if k.startswith("dice_"))
        print(f"{m['name']:<28} {m['network']:<10} {m['label_scheme']:<10} {tag}; "
              f"Dice {dice + ' (' + where + ')' if dice else 'n/a'}")
        print(f"{'':<28} {m['path']}")
    return 0


def _cmd_ensemble(args: argparse.Namespace) -> int:
    """Write an ensemble of models (optionally validated on the real-data recipe's cases)."""
    import shlex

    from . import bundles

    entries = bundles.check_ensemble(args.out, args.models)  # before any slow validation
    doc: dict = {}
    if args.validate_on:
        from .real_recipe import ensemble_manifest

        # the very folders the ensemble will load, found as it will find them
        doc = ensemble_manifest(args.validate_on, [bundles.member_folder(e["name"], args.out) for e in entries])
    if args.description:
        doc["description"] = args.description
    doc["made_by"] = " ".join([PROG, "ensemble", *args.models, "--out OUT"]
                              + (["--validate-on DATA"] if args.validate_on else [])
                              + (["--description", shlex.quote(args.description)] if args.description else []))
    out = bundles.save_ensemble(args.out, args.models, doc)
    print(f"ensemble: {out}")
    return 0


def _cmd_devices(args: argparse.Namespace) -> int:
    from . import devices

    info = {"available": devices.available(), "description": devices.describe()}
    print(json.dumps(info) if args.json else f"{info['description']}\ndevices: {', '.join(info['available'])}")
    return 0


def _add_data_commands(sub) -> None:
    """phantom, evaluate and networks."""
    ph = sub.add_parser("phantom", help="write synthetic BraTS-like cases (no network needed)")
    ph.add_argument("outdir")
    ph.add_argument("--n", type=int, default=1, help="number of cases (default 1)")
    ph.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ph.add_argument("--start", type=int, default=0, help="index of the first case (default 0)")
    ph.add_argument("--quiet", action="store_true", help="no progress output")
    ph.set_defaults(func=_cmd_phantom)

    ev = sub.add_parser("evaluate", help="BraTS metrics (Dice, sensitivity, specificity, HD95, volume) per region")
    ev.add_argument("--pred", required=True, help="predicted label file, or folder of them")
    ev.add_argument("--ref", required=True, help="reference label file, or folder (BraTS layout or flat)")
    ev.add_argument("--csv", default="evaluation.csv", help="per-case CSV (default evaluation.csv)")
    ev.add_argument("--json", default="evaluation.json", help="summary JSON (default evaluation.json)")
    ev.add_argument("--hd95", choices=("max", "pooled"), default="max",
                    help="HD95 definition: max of directed 95th percentiles (CaPTk/MONAI, default) "
                         "or 95th percentile of pooled distances (MedPy/panoptica)")
    ev.add_argument("--pred-scheme", choices=("brats2021", "brats2023"), help="default: detected")
    ev.add_argument("--ref-scheme", choices=("brats2021", "brats2023"), help="default: detected")
    ev.set_defaults(func=_cmd_evaluate)
    nw = sub.add_parser("networks", help="list the networks with parameters, GFLOPs and CPU forward time")
    nw.add_argument("--size", type=int, default=128, help="cube edge of the input (default 128)")
    nw.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    nw.add_argument("--no-time", action="store_true", help="skip the timed forward passes")
    nw.set_defaults(func=_cmd_networks)


def _add_segment_command(sub) -> None:
    """segment, models and devices."""
    sg = sub.add_parser("segment", help="segment a case: necrotic core, edema, enhancing tumor on the T1ce grid")
    for r in SEQUENCES:
        sg.add_argument(f"--{r}", help=f"{r} volume")
    sg.add_argument("--case", help="a case folder (files named by role, e.g. <id>_t1ce.nii.gz) instead of the four files")
    sg.add_argument("--cases", help="a folder of case folders, each segmented (the models loaded once); -o is then "
                                    "an existing folder that gets <case>.nii.gz for each")
    sg.add_argument("-o", "--output", required=True, help="the label file to write (.nii.gz, .nrrd, ...): a file name, "
                                                          "never a folder (with --cases: the folder for the results)")
    sg.add_argument("--model", action="append", help="model name, bundle folder or ensemble folder; repeat for an "
                                                      "ensemble (default: the shipped default model)")
    segment_options.add_arguments(sg)  # every option of SegmentOptions, from its declaration
    sg.add_argument("--report", help="write a JSON report: model, device, timings, volumes, geometry")
    sg.add_argument("--quiet", action="store_true", help="no progress bar")
    sg.add_argument("--reference-labels", help="expert labels of the case: print Dice and HD95 of the result "
                                               "against them (and add them to the report)")
    sg.set_defaults(func=_cmd_segment)

    md = sub.add_parser("models", help="list installed model bundles and ensembles")
    md.set_defaults(func=_cmd_models)

    en = sub.add_parser("ensemble", help="an ensemble of models (their probabilities averaged), usable as one model")
    en.add_argument("models", nargs="+", metavar="MODEL", help="two or more bundles (names or folders)")
    en.add_argument("--out", required=True, help="new folder for the ensemble (beside its members, or in "
                                                 "~/.braintumorseg/models to use it by name)")
    en.add_argument("--description", help="shown in the model lists")
    en.add_argument("--validate-on", metavar="DATA", help="the real-data recipe's folder: validate through segment "
                                                         "on its validation cases and record the figures")
    en.set_defaults(func=_cmd_ensemble)

    dv = sub.add_parser("devices", help="the hardware torch sees: CPU threads, CUDA GPUs, MPS")
    dv.add_argument("--json", action="store_true", help="one JSON line (for the Slicer module)")
    dv.set_defaults(func=_cmd_devices)


def _add_train_args(t: argparse.ArgumentParser, epochs: int) -> None:
    """The options train and finetune share."""
    t.add_argument("--data", required=True, help="folder of training cases (BraTS 2021 or 2023 layout)")
    t.add_argument("--val", help="folder of validation cases")
    t.add_argument("--folds", type=int, default=0, help="k-fold split of --data (with --fold)")
    t.add_argument("--fold", type=int, default=0)
    t.add_argument("--out", required=True, help="run folder (checkpoints, logs, exported bundle)")
    t.add_argument("--epochs", type=int, default=epochs)
    t.add_argument("--iters", type=int, default=50, help="iterations per epoch")
    t.add_argument("--patch", type=int, nargs=3, metavar=("Z", "Y", "X"))
    t.add_argument("--batch", type=int, default=2)
    t.add_argument("--lr", type=float, help="learning rate (default: the network's, a tenth of it for finetune)")
    t.add_argument("--amp", action="store_true",
                   help="mixed precision: fp16 on CUDA, bf16 on CPUs that run it natively")
    t.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (under torchrun: "
                                                    "one GPU per process by LOCAL_RANK, or CPUs with gloo)")
    t.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute activations in backward: less GPU memory, about a third more time")
    t.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--val-every", type=int, default=5)
    t.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    t.add_argument("--skip-bad", action="store_true", help="skip broken cases with a warning instead of failing")
    t.add_argument("--domain-randomization", action="store_true", help="random contrast per sequence (synthetic data)")
    t.add_argument("--clinical-augmentation", action="store_true",
                   help="thick slices along an axis per sequence and tighter brain masks (for clinical scans)")


def _add_training_commands(sub) -> None:
    """train, finetune, train-demo and train-recipe."""
    tr = sub.add_parser("train", help="train a network on cases with labels; exports a model bundle")
    tr.add_argument("--network", default="resunet", help="resunet, agse_vnet, cga_unet or dmda_unet")
    tr.add_argument("--options", help="network options as JSON, e.g. '{\"channels\": [16, 32, 64, 128, 128]}'")
    _add_train_args(tr, epochs=20)
    tr.set_defaults(func=_cmd_train)

    ft = sub.add_parser("finetune", help="continue training a model bundle on new cases (e.g. corrected in Slicer)")
    ft.add_argument("--from", dest="model", required=True, help="model bundle: installed name or folder")
    ft.add_argument("--freeze-encoder", action="store_true", help="train only the decoder and heads")
    ft.add_argument("--replay", help="folder of earlier training cases to mix in, so the model does not forget them")
    ft.add_argument("--replay-fraction", type=float, default=0.3, help="share of patches from --replay (default 0.3)")
    _add_train_args(ft, epochs=10)
    ft.set_defaults(func=_cmd_finetune)

    td = sub.add_parser("train-demo", help="the recipe of the shipped demo model: phantoms, training, held-out test")
    td.add_argument("--workdir", required=True, help="folder for phantoms and the run")
    td.add_argument("--out", required=True, help="where to write the bundle (e.g. BrainTumorSegLib/models/brats-synthetic-demo)")
    td.add_argument("--n-train", type=int, default=40)
    td.add_argument("--n-val", type=int, default=3)
    td.add_argument("--n-test", type=int, default=5)
    td.add_argument("--epochs", type=int, default=15)
    td.add_argument("--iters", type=int, default=45)
    td.set_defaults(func=_cmd_train_demo)

    tr2 = sub.add_parser("train-recipe", help="a named real-data recipe (fixed split, settings, validation "
                                              "through segment); resumes a run folder")
    tr2.add_argument("recipe", choices=["brats-glioma"])
    tr2.add_argument("--data", required=True, help="folder with the real BraTS cases (e.g. ../shared/real-cases)")
    tr2.add_argument("--out", required=True, help="run folder; an existing one is resumed")
    tr2.add_argument("--variant", default="2mm", help="a variant of real_recipe.VARIANTS: 2mm (default), 1mm, ...")
    tr2.add_argument("--epochs", type=int, default=30)
    tr2.add_argument("--iters", type=int, default=100, help="iterations per epoch")
    tr2.add_argument("--seed", type=int, default=0)
    tr2.add_argument("--export", help="where to write the bundle (default RUNDIR/ID, the variant's model id: "
                                      "brats-glioma-v1, brats-glioma-clinaug-v1...)")
    tr2.add_argument("--cache", help="folder of preprocessed cases (default RUNDIR/cache); variants may share one")
    tr2.add_argument("--init-from", metavar="MODEL", help="start from this bundle's weights (e.g. the last "
                                                          "exported model, when the run folder was lost)")
    tr2.add_argument("--from-checkpoint", metavar="PT", help="no training: export and validate this checkpoint of "
                                                            "the run (e.g. the best so far of a run still going)")
    tr2.set_defaults(func=_cmd_train_recipe)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Brain tumor segmentation from T1, T1ce, T2 and FLAIR MRI.")
    p.add_argument("-v", "--verbose", action="store_true", help="log details")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    _add_data_commands(sub)
    _add_segment_command(sub)
    _add_training_commands(sub)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    from .allocator import tune_glibc_malloc

    tune_glibc_malloc()  # before torch allocates: whole-window activations stay on the heap
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format=f"{PROG}: %(levelname)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except Cancelled:
        print(f"{PROG}: cancelled; nothing was written", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing was written", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"{PROG}: error: out of memory", file=sys.stderr)
        return 2
    except OSError as exc:
        where = getattr(exc, "filename", None)
        print(f"{PROG}: error: {where + ': ' if where else ''}{exc.strerror or exc}", file=sys.stderr)
        return 2
