"""The ``braintumorseg`` command line (also ``python -m BrainTumorSegLib``).

Bad input ends with one line ``braintumorseg: error: <file>: <problem>`` and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import List, Optional, Union

from .. import __version__
from ..errors import Cancelled, InputError, Terminated
from . import segment as segment_cli
from .segment import PROG


def _cmd_phantom(args: argparse.Namespace) -> int:
    from ..synthetic.phantom import generate

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
    from ..evaluation.scoring import evaluate, format_table, write_outputs

    results = evaluate(args.pred, args.ref, args.hd95, args.pred_scheme, args.ref_scheme)
    write_outputs(results, args.csv, args.json, args.hd95)
    print(format_table(results))
    print(f"HD95 in mm ({args.hd95} definition); per-case CSV: {args.csv}; summary JSON: {args.json}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from ..evaluation.comparison import compare_sources, format_comparison, format_intervals
    from ..write.atomic import write_json

    sources = [args.a] + ([args.b] if args.b else [])
    result = compare_sources(sources, args.resamples, args.seed)
    print(format_comparison(result, args.a, args.b) if args.b else format_intervals(result, args.a))
    if args.json:
        write_json(args.json, {"a": args.a, **({"b": args.b} if args.b else {}), **result}, inputs=sources)
    return 0


def _cmd_networks(args: argparse.Namespace) -> int:
    import torch

    from ..networks import NETWORKS, build
    from ..networks.flops import count_flops, count_parameters

    if args.threads:
        torch.set_num_threads(args.threads)
    size = (args.size,) * 3
    print(f"{'network':<16}{'output':<10}{'params (M)':>12}{'GFLOPs':>10}{'CPU fwd (s)':>13}  patch (z,y,x)  paper")
    for name in NETWORKS:
        net = build(name).eval()
        shape = (1, len(net.in_sequences) + net.guide_channels) + size  # a cascade's stage 2 also takes stage 1's
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
        print(f"{name:<16}{net.output_kind:<10}{params:>12.3f}{gflops:>10.1f}{secs:>13}  "
              f"{'x'.join(map(str, net.patch_size)):<14} {net.paper}")
    print(f"GFLOPs and forward time for one {'x'.join(map(str, size))} input, fp32, "
          f"{torch.get_num_threads()} threads; FLOPs counted as multiply-accumulates of convs and matrix products "
          "(the CGA U-Net paper's convention); dmda_unet is timed on stage 2, which runs on 128^3 cubes, and "
          "coarse_to_fine on stage 2 (stage 1 runs once per case, at 2 mm).")
    return 0


def _train_config(args: argparse.Namespace, network: Optional[str] = None, options: Optional[dict] = None):
    """The options ``train`` and ``finetune`` share (finetune takes network and options from its bundle)."""
    from ..networks import DEFAULT_NETWORK
    from ..training import TrainConfig

    return TrainConfig(network=network or DEFAULT_NETWORK, options=options or {}, epochs=args.epochs, iters_per_epoch=args.iters,
                       batch=args.batch, patch=tuple(args.patch) if args.patch else None, lr=args.lr,
                       seed=args.seed, val_every=args.val_every, workers=args.workers, amp=args.amp,
                       domain_randomization=args.domain_randomization, device=args.device,
                       gradient_checkpointing=args.gradient_checkpointing,
                       clinical_augmentation=args.clinical_augmentation, augmentation=args.augmentation,
                       region_weights=tuple(args.region_weights) if args.region_weights else None,
                       hardest_voxels=args.hardest_voxels, batch_dice=args.batch_dice,
                       missed_weight=args.missed_weight,
                       without_enhancement=args.without_enhancement, fluid_cores=args.fluid_cores,
                       fluid_without_enhancement=args.fluid_without_enhancement, solid_cores=args.solid_cores,
                       carved_tumors=args.carved_tumors, carve_from=tuple(args.carve_from or ()),
                       schedule=args.schedule,
                       average_from=args.average_from)


def _split(args: argparse.Namespace):
    from ..read.cases import find_cases
    from ..training import check_cases

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
    from ..training import train

    train_cases, val_cases = _split(args)
    options = json.loads(args.options) if args.options else {}
    out = train(_train_config(args, args.network, options), train_cases, val_cases, args.out, resume=args.resume)
    print(f"model bundle: {out}")
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    from ..read.cases import find_cases
    from ..training import check_cases, finetune

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
    from ..recipes.demo import train_demo

    out = train_demo(args.workdir, args.out, n_train=args.n_train, n_val=args.n_val, n_test=args.n_test,
                     epochs=args.epochs, iters=args.iters)
    print(f"demo model bundle: {out}")
    return 0


def _recipe_fold(text: str) -> Union[int, str]:
    """--fold of train-recipe: a fold number or ``all``."""
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a fold number nor 'all'") from None


def _cmd_train_recipe(args: argparse.Namespace) -> int:
    """A named real-data recipe: fixed split, training (resumable), validation through segment."""
    from ..recipes.brats_glioma import export_checkpoint, export_folder, pack, train_real
    from ..training import is_pack

    if args.pack_to:
        given = [f for f, v in (("--out", args.out), ("--fold", args.fold), ("--export", args.export),
                                ("--init-from", args.init_from), ("--from-checkpoint", args.from_checkpoint),
                                ("--figures-from", args.figures_from))
                 if v is not None]
        if given:
            raise InputError(None, f"--pack-to only packs the cases; {', '.join(given)} belong to a run")
        print(f"pack: {pack(args.data, args.variant, args.pack_to, args.cache)}")
        return 0
    if args.out is None:
        raise InputError(None, "--out RUNDIR (the run folder) is needed, or --pack-to OUT to pack the cases")
    if args.from_checkpoint:
        out = export_checkpoint(args.data, args.out, args.from_checkpoint,
                                args.export or export_folder(args.out, args.variant, args.fold), variant=args.variant,
                                epochs=args.epochs, iters=args.iters, seed=args.seed, fold=args.fold,
                                figures_from=args.figures_from)
    else:
        out = train_real(args.data, args.out, variant=args.variant, epochs=args.epochs, iters=args.iters,
                         seed=args.seed, resume=True, export=args.export, cache_dir=args.cache,
                         init_from=args.init_from, fold=args.fold, workers=args.workers, amp=args.amp,
                         figures_from=args.figures_from)
    print(f"{'checkpoint' if is_pack(args.data) and not args.from_checkpoint else 'model bundle'}: {out}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from ..models import bundles, catalog, ensembles

    found = catalog.installed()
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
        key = ensembles.held_out_key(m)
        held_out = metrics[key] if key else {}
        if isinstance(held_out.get("mean"), dict):
            n = len(held_out.get("cases") or [])
            # a recipe bundle's held-out fold, or a cross-validation's folds pooled (each case by the fold that held it out)
            where = f"{n} held-out cases" if key == "validation_segment" else f"{n} cases out of fold"
            scores = held_out["mean"]
        elif metrics.get("held_out_synthetic"):
            where, scores = "held-out phantoms", metrics["held_out_synthetic"]
        else:
            where, scores = "validation during training", metrics.get("validation") or {}
        dice = " ".join(f"{k[5:]} {v:.2f}" for k, v in scores.items() if k.startswith("dice_"))
        print(f"{m['name']:<28} {m['network']:<10} {m['label_scheme']:<10} {tag}; "
              f"Dice {dice + ' (' + where + ')' if dice else 'n/a'}")
        print(f"{'':<28} {m['path']} ({catalog.size_on_disk(m['path']) / 1e6:.1f} MB on disk"
              f"{', weights stored as ' + m['weights_storage'] if m.get('weights_storage') else ''})")
    return 0


def _cmd_ensemble(args: argparse.Namespace) -> int:
    """Write an ensemble of models (optionally validated on the real-data recipe's cases)."""
    import shlex

    from ..models import ensembles

    entries = ensembles.check_ensemble(args.out, args.models)  # before any slow validation
    doc: dict = {}
    if args.validate_on:
        from ..recipes.brats_glioma import ensemble_manifest

        # the very folders the ensemble will load, found as it will find them
        doc = ensemble_manifest(args.validate_on, [ensembles.member_folder(e["name"], args.out) for e in entries])
    if args.description:
        doc["description"] = args.description
    doc["made_by"] = " ".join([PROG, "ensemble", *args.models, "--out OUT"]
                              + (["--validate-on DATA"] if args.validate_on else [])
                              + (["--description", shlex.quote(args.description)] if args.description else []))
    out = ensembles.save_ensemble(args.out, args.models, doc)
    print(f"ensemble: {out}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    """A copy of a bundle with its weights stored in another precision (computing stays fp32)."""
    from ..models import bundles

    b = bundles.load(args.model)
    doc = b.manifest.to_json()
    doc["converted_from"] = {"id": b.id, "weights_sha256": b.manifest.weights_sha256, "storage": args.storage}
    print(f"model bundle: {bundles.save(b.network, args.out, doc, storage=args.storage)}")
    return 0


def _cmd_average(args: argparse.Namespace) -> int:
    """A bundle whose weights (or one part's) are the mean of several models' (a model soup)."""
    from ..models import averaging, bundles

    out = os.path.abspath(args.out)
    bundles.check_new_folder(out)  # before any loading or validating
    base = bundles.load(args.base)
    others = [bundles.load(m) for m in args.others]
    net = averaging.averaged_network(base, others, args.part)
    doc = averaging.averaged_manifest(base, others, args.id or os.path.basename(out), args.part, args.description)
    if args.validate_on:
        from ..recipes.brats_glioma import validate_fold_model

        print(f"model bundle: {validate_fold_model(net, doc, args.validate_on, out)}")
        return 0
    if args.figures_from:
        from ..recipes.brats_glioma import averaged_design_fields

        doc.update(averaged_design_fields(doc, [o.manifest for o in others], args.figures_from))
    print(f"model bundle: {bundles.save(net, out, doc)}" + ("" if args.figures_from else " (no figures)"))
    return 0


def _cmd_devices(args: argparse.Namespace) -> int:
    from ..predict import devices

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
    cp = sub.add_parser("compare", help="two models' held-out Dice compared case by case: differences per region "
                                        "and grade with 95%% intervals, cases better and worse (one model: "
                                        "its means with their intervals)")
    cp.add_argument("a", metavar="A", help="a model (name or folder) or a JSON file: a manifest, or a report with "
                                           "per_case")
    cp.add_argument("b", metavar="B", nargs="?", help="the same for the design compared against A; left out: A's "
                                                      "means with their 95%% intervals")
    cp.add_argument("--resamples", type=int, default=10000, help="bootstrap resamples of the cases, 100-100000 "
                                                                 "(default 10000)")
    cp.add_argument("--seed", type=int, default=0, help="the resampling's seed (default 0)")
    cp.add_argument("--json", metavar="FILE", help="also write the comparison as JSON")
    cp.set_defaults(func=_cmd_compare)
    nw = sub.add_parser("networks", help="list the networks with parameters, GFLOPs and CPU forward time")
    nw.add_argument("--size", type=int, default=128, help="cube edge of the input (default 128)")
    nw.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    nw.add_argument("--no-time", action="store_true", help="skip the timed forward passes")
    nw.set_defaults(func=_cmd_networks)


def _add_segment_command(sub) -> None:
    """segment, models and devices."""
    segment_cli.add_parser(sub)

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

    cv = sub.add_parser("convert", help="copy a model bundle with its weights stored in half precision (half the size)")
    cv.add_argument("model", metavar="MODEL", help="a bundle (name or folder)")
    cv.add_argument("--out", required=True, help="new folder for the copy")
    cv.add_argument("--storage", default="float16", choices=["float16", "float32"], help="weights on disk (default "
                                                                                         "float16); computing stays fp32")
    cv.set_defaults(func=_cmd_convert)

    av = sub.add_parser("average", help="a model whose weights are the mean of several models' (a model soup: "
                                         "models fine-tuned from one start, trained on the same cases)")
    av.add_argument("base", metavar="BASE", help="the bundle whose manifest, and the rest of whose weights, the "
                                                 "average keeps")
    av.add_argument("others", nargs="+", metavar="MODEL", help="bundles averaged with it (with --part: with that part)")
    av.add_argument("--out", required=True, help="new folder for the averaged bundle")
    av.add_argument("--part", help="average only this part of BASE's network (a cascade's coarse stage: coarse)")
    av.add_argument("--id", help="its model id (default: the folder's name)")
    av.add_argument("--description", help="shown in the model lists")
    figures = av.add_mutually_exclusive_group()  # a fold model is validated; a model of every case takes its design's
    figures.add_argument("--validate-on", metavar="DATA", help="the real-data recipe's folder: validate a fold model "
                                                              "on its held-out fold through segment and record the figures")
    figures.add_argument("--figures-from", metavar="ENSEMBLE", help="for models trained on every case: their design's "
                                                                    "figures, from the ensemble ensemble --validate-on "
                                                                    "made of the same averages of their fold models")
    av.set_defaults(func=_cmd_average)

    dv = sub.add_parser("devices", help="the hardware torch sees: CPU threads, CUDA GPUs, MPS")
    dv.add_argument("--json", action="store_true", help="one JSON line (for the Slicer module)")
    dv.set_defaults(func=_cmd_devices)


def _processes(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a number of processes, 0 or more")
    return n


def _add_resource_args(t: argparse.ArgumentParser) -> None:
    """How every training command uses the machine."""
    t.add_argument("--amp", action="store_true",
                   help="mixed precision: fp16 on CUDA, bf16 on CPUs that run it natively")
    t.add_argument("--workers", type=_processes, default=0,
                   help="processes preparing patches beside the training one (default 0: none)")


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
    t.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (under torchrun: "
                                                    "one GPU per process by LOCAL_RANK, or CPUs with gloo)")
    t.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute activations in backward: less GPU memory, about a third more time")
    _add_resource_args(t)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--val-every", type=int, default=5)
    t.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    t.add_argument("--skip-bad", action="store_true", help="skip broken cases with a warning instead of failing")
    t.add_argument("--domain-randomization", action="store_true", help="random contrast per sequence (synthetic data)")
    t.add_argument("--clinical-augmentation", action="store_true",
                   help="thick slices along an axis per sequence and tighter brain masks (for clinical scans)")
    t.add_argument("--augmentation", default="standard",
                   help="augmentation set: standard, or nnunet (rotation about every axis, scaling, elastic, "
                        "contrast, low resolution; docs/training.md)")
    t.add_argument("--region-weights", type=float, nargs=3, metavar=("WT", "TC", "ET"),
                   help="weights of the WT, TC and ET terms of a region-based loss (refused for a network without "
                        "one), e.g. 1 2 1")
    t.add_argument("--hardest-voxels", type=float, metavar="P",
                   help="share (0-1] of each region's voxels, the hardest, whose cross-entropy counts in a "
                        "region-based loss (refused for a network without one; nnU-Net's TopK loss, e.g. 0.1; "
                        "default: all)")
    t.add_argument("--batch-dice", action="store_true",
                   help="the Dice term of a region-based loss over the whole batch rather than per patch (refused "
                        "for a network without one; nnU-Net's batch Dice)")
    t.add_argument("--missed-weight", type=float, metavar="B",
                   help="weight (0-1) of missed voxels in a region-based loss's overlap term, 1 - B that of false "
                        "ones (refused for a network without one; the Tversky index, e.g. 0.7 to favour recall; "
                        "default: 0.5, the Dice)")
    t.add_argument("--without-enhancement", type=float, default=0.0, metavar="P",
                   help="share (0-1) of patches shown as if their tumor did not enhance: T1ce from T1 there, "
                        "enhancing tumor labelled non-enhancing core (docs/training.md)")
    t.add_argument("--fluid-cores", type=float, default=0.0, metavar="P",
                   help="share (0-1) of patches whose tumor core is shown filled with fluid, as a cyst: the case's "
                        "cerebrospinal fluid intensities there, labels unchanged (docs/training.md)")
    t.add_argument("--fluid-without-enhancement", type=float, default=0.0, metavar="P",
                   help="share (0-1) of those patches also shown without enhancement, a cyst whose wall does not "
                        "enhance (at least --without-enhancement)")
    t.add_argument("--solid-cores", type=float, default=0.0, metavar="P",
                   help="share (0-1) of patches whose tumor core is shown as a solid core that does not enhance, as "
                        "a low-grade glioma's: darker than its edema on T1, labelled non-enhancing core "
                        "(docs/training.md)")
    t.add_argument("--carved-tumors", type=float, default=0.0, metavar="P",
                   help="share (0-1) of patches with another training case's tumor carved in at the same place "
                        "(CarveMix; cases co-registered on one grid, as BraTS's; docs/training.md)")
    t.add_argument("--carve-from", nargs="+", metavar="CASE_ID",
                   help="the training cases whose tumors are carved in (default: every training case)")
    t.add_argument("--schedule", help="learning-rate schedule: cosine, step or constant (default: the network's "
                                      "own; step needs the network's step learning rate)")
    t.add_argument("--average-from", type=int, metavar="EPOCH",
                   help="average the weights at the end of each epoch from EPOCH (1-based) on and export the "
                        "average (stochastic weight averaging; networks without batch-norm statistics)")


def _add_training_commands(sub) -> None:
    """train, finetune, train-demo and train-recipe."""
    tr = sub.add_parser("train", help="train a network on cases with labels; exports a model bundle")
    tr.add_argument("--network", help="the network to train (default: resunet; braintumorseg networks lists and "
                                      "describes them)")
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
    tr2.add_argument("--data", required=True, help="folder with the real BraTS cases (e.g. ../shared/real-cases), "
                                                   "or a pack of them (--pack-to)")
    tr2.add_argument("--out", help="run folder; an existing one is resumed")
    tr2.add_argument("--variant", default="2mm", help="a variant of recipes/brats_glioma_variants.py's VARIANTS: 2mm "
                                                   "(default), 1mm, 2mm-cv, ... (an unknown one lists them)")
    tr2.add_argument("--fold", type=_recipe_fold, help="for the 2mm-cv... variants: the cross-validation fold to "
                                                     "hold out (0-4; cross_validation.FOLDS, stratified by grade and "
                                                     "institution), or 'all': every case, none held out")
    tr2.add_argument("--epochs", type=int, default=30)
    tr2.add_argument("--iters", type=int, default=100, help="iterations per epoch")
    tr2.add_argument("--seed", type=int, default=0)
    tr2.add_argument("--export", help="where to write the bundle (default RUNDIR/ID, the variant's model id: "
                                      "brats-glioma-v1, brats-glioma-v9-fold0...)")
    tr2.add_argument("--cache", help="folder of preprocessed cases (default RUNDIR/cache); variants may share one")
    tr2.add_argument("--init-from", metavar="MODEL", help="start from this bundle's weights (e.g. the last "
                                                          "exported model, when the run folder was lost)")
    tr2.add_argument("--figures-from", metavar="ENSEMBLE", help="with --fold all: take the design's out-of-fold "
                                                               "figures, postprocessing and window from this ensemble "
                                                               "of its fold models (ensemble --validate-on) instead of "
                                                               "segmenting their held-out cases again")
    tr2.add_argument("--from-checkpoint", metavar="PT", help="no training: export and validate this checkpoint of "
                                                            "the run (e.g. the best so far of a run still going)")
    tr2.add_argument("--pack-to", metavar="OUT", help="no training: cache every case on the variant's grid and "
                                                       "write them, compressed, to the new folder OUT, to train where "
                                                       "the raw cases are not (a GPU machine; docs/training.md)")
    _add_resource_args(tr2)
    tr2.set_defaults(func=_cmd_train_recipe)


def build_parser() -> argparse.ArgumentParser:
    """The ``braintumorseg`` parser with every command (no torch is imported to build it)."""
    p = argparse.ArgumentParser(prog=PROG, description="Brain tumor segmentation from T1, T1ce, T2 and FLAIR MRI.")
    p.add_argument("-v", "--verbose", action="store_true", help="log details")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    _add_data_commands(sub)
    _add_segment_command(sub)
    _add_training_commands(sub)
    return p


def _check_no_empty_value(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Any option or argument given an empty value (``-o "$OUT"`` with OUT unset) is a slip, not an
    option left out: refused before the command runs, whichever command it is (an empty path would
    otherwise be read as the current folder)."""
    # argparse lists a parser's actions only in its private ``_actions``; it has been stable for years
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for action in commands[args.command]._actions:
        value = getattr(args, action.dest, None)
        if value == "" or (isinstance(value, list) and "" in value):
            name = (action.option_strings[0] if action.option_strings
                    else f"argument {action.metavar or action.dest.upper()}")
            raise InputError(None, f"{name} is empty (an unset shell variable?); give a value")


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def main(argv: Optional[List[str]] = None) -> int:
    """Run one ``braintumorseg`` command; a mistake in the input is one line on stderr and exit 2.

    Args:
        argv: the command line without the program name (None: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 done, 1 a batch with failed cases, 2 bad input, 130 cancelled or
        interrupted, 143 terminated (SIGTERM).
    """
    from ..predict.allocator import tune_glibc_malloc

    tune_glibc_malloc()  # before torch allocates: whole-window activations stay on the heap
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format=f"{PROG}: %(levelname)s: %(message)s")
    # SIGTERM, as Ctrl-C, removes what was being written (its default ends the process at once)
    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if on_main else None
    try:
        _check_no_empty_value(parser, args)
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except Cancelled:
        print(f"{PROG}: cancelled; nothing was written", file=sys.stderr)
        return 130
    except Terminated:
        print(f"{PROG}: terminated; nothing was written", file=sys.stderr)
        return 143
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
    finally:
        if on_main and previous is not None:  # None: a handler installed from C, which Python cannot restore
            signal.signal(signal.SIGTERM, previous)
