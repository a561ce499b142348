"""The training loop: a run's steps, resumable at every epoch, exported as a model bundle.

Determinism: torch's generator is reseeded at each epoch start (and the patches of an epoch are
fixed by ``data``), so a run resumed from an epoch checkpoint continues exactly as an
uninterrupted one (on the CPU).
"""
from __future__ import annotations

import gc
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from .. import extras, progress
from ..errors import InputError
from ..models import bundles
from ..networks import SegmentationNetwork, build, network_class
from ..predict import devices
from ..read.cases import REFERENCE
from ..segment_options import NO_POSTPROCESSING
from ..write.atomic import write_json
from .augmentation import augmentation_set
from .checkpoint import BEST, LAST, exported_checkpoint, exported_weights, load_checkpoint, save_checkpoint, weights_digest
from .config import TrainConfig
from .data import Guide, PatchDataset, cache_case
from .distributed import Distributed, init_distributed
from .optimisation import compute_loss, make_optimizer, make_scheduler, schedule_of
from .pack import PackedCase, TrainingCase
from .runlog import write_log
from .validation import validate

Log = Callable[..., None]


@dataclass
class _Run:
    """What the steps of one run share."""
    cfg: TrainConfig
    out_dir: str
    dist: Distributed
    device: torch.device
    net: SegmentationNetwork
    model: torch.nn.Module          # ``net``, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    amp_dtype: Optional[torch.dtype]
    files: Dict[str, List[str]]
    data_used: Dict[str, List[str]]
    log: Log
    progress: Optional[Callable[[str, float], None]] = None
    start_epoch: int = 0
    best: float = -1.0
    history: Optional[List[Dict]] = None
    average: Optional[Dict[str, torch.Tensor]] = None  # the epoch-end weights averaged so far (cfg.average_from)
    averaged: int = 0                                  # how many

    @property
    def last_checkpoint(self) -> str:
        return os.path.join(self.out_dir, LAST)


def _amp_dtype(cfg: TrainConfig, device: torch.device, log: Log) -> Optional[torch.dtype]:
    if not cfg.amp:
        return None
    dtype = devices.autocast_dtype(device, cpu_bf16=devices.cpu_has_fast_bf16())
    if dtype is None:
        log(f"note: --amp has no effect on {device.type} here (no native bf16); training in fp32")
    return dtype


def _network(cfg: TrainConfig, init_from: Optional[bundles.Bundle]) -> SegmentationNetwork:
    torch.manual_seed(cfg.seed)  # the initial weights are part of the run's reproducibility
    net = init_from.network if init_from is not None else build(cfg.network, **cfg.options)
    loss_settings = {"region_weights": None if cfg.region_weights is None else tuple(float(w) for w in cfg.region_weights),
                     "hardest_voxels": cfg.hardest_voxels, "batch_dice": True if cfg.batch_dice else None,
                     "missed_weight": cfg.missed_weight}
    for name, value in loss_settings.items():
        if value is None:
            continue
        if not hasattr(net, name):
            raise InputError(None, f"{type(net).__name__}'s loss has no {name} to set")
        setattr(net, name, value)
    if cfg.freeze_encoder:
        for prm in net.encoder_parameters():
            prm.requires_grad_(False)
    if cfg.gradient_checkpointing:
        net.enable_gradient_checkpointing()
    return net


def _cached(case: TrainingCase, cache_dir: str, cfg: TrainConfig, guide: Optional[Guide]) -> str:
    if not isinstance(case, PackedCase):
        return cache_case(case, cache_dir, cfg.spacing, guide)
    if guide is not None:
        raise InputError(case.path, "is a packed case: a pack holds no guide channels for a cascade's later stage")
    return case.path


def _cache(cases: Dict[str, Sequence[TrainingCase]], cache_dir: str, cfg: TrainConfig, dist: Distributed,
           guide: Optional[Guide]) -> Dict[str, List[str]]:
    """Preprocess every case once (a packed case is already); rank 0 fills the cache first, the
    others then find it full. The patches' cases get ``guide``'s channels; validation cases are
    segmented as ``segment`` would, the network making its own."""
    if not dist.main:
        dist.barrier()
    files = {k: [_cached(c, cache_dir, cfg, guide if k != "val" else None) for c in cs] for k, cs in cases.items()}
    if dist.main:
        dist.barrier()
    return files


def _own_guide(net: SegmentationNetwork) -> Guide:
    """A cascade's guide channels made by its own first stage, keyed by its starting weights (the
    same again when a run resumes, whose checkpoint is loaded after caching)."""
    return Guide.made("own", net, weights_digest(net)[:16], lambda case_id, volume: net.guide(volume))


def _setup(cfg: TrainConfig, cases: Dict[str, Sequence[TrainingCase]], out_dir: str, init_from: Optional[bundles.Bundle],
           log: Log, cache_dir: Optional[str], guide: Optional[Guide] = None) -> _Run:
    augmentation_set(cfg.augmentation)  # an unknown name fails before caching
    if cfg.average_from is not None and not 1 <= cfg.average_from <= cfg.epochs:
        raise InputError(None, f"--average-from {cfg.average_from}: an epoch of the run's 1-{cfg.epochs}")
    shares = (("--without-enhancement", cfg.without_enhancement), ("--fluid-cores", cfg.fluid_cores),
              ("--fluid-without-enhancement", cfg.fluid_without_enhancement), ("--solid-cores", cfg.solid_cores),
              ("--carved-tumors", cfg.carved_tumors))
    for flag, share in shares:
        if not 0.0 <= share <= 1.0:
            raise InputError(None, f"{flag} {share}: a share of patches, from 0 to 1")
    if cfg.carve_from and not cfg.carved_tumors:
        raise InputError(None, "--carve-from names the cases whose tumors --carved-tumors carves; give that share too")
    unknown = sorted(set(cfg.carve_from) - {c.case_id for c in cases["train"]})
    if unknown:
        raise InputError(None, f"--carve-from {' '.join(unknown)}: not among the training cases")
    if cfg.fluid_cores and cfg.solid_cores:
        raise InputError(None, "--fluid-cores and --solid-cores: one kind of core at a time, not both")
    if cfg.hardest_voxels is not None and not 0.0 < cfg.hardest_voxels <= 1.0:
        raise InputError(None, f"--hardest-voxels {cfg.hardest_voxels}: a share of voxels, above 0 and at most 1")
    if cfg.missed_weight is not None and not 0.0 < cfg.missed_weight < 1.0:
        raise InputError(None, f"--missed-weight {cfg.missed_weight}: a weight between 0 and 1 (0.5: the Dice)")
    dist, device = init_distributed(cfg.device)
    if not dist.main:
        log = lambda *a, **k: None  # noqa: E731 - rank 0 speaks for the job
    net = _network(cfg, init_from)  # before any folder is made: a setting the network refuses leaves none
    if cfg.average_from is not None and any(getattr(m, "track_running_stats", False) for m in net.modules()):
        # averaged weights would need their batch-norm statistics measured again (SWA's update_bn)
        raise InputError(None, f"weight averaging is for networks without batch-norm statistics; {cfg.network} "
                               "keeps them")
    schedule_of(net.training_defaults, cfg.schedule)
    for flag, share in shares:
        if share and net.guide_channels:
            # the guide channels would still show the first stage's view of the unchanged images
            raise InputError(None, f"{flag} is for networks without guide channels; {cfg.network} "
                                   f"takes {net.guide_channels}")
    os.makedirs(out_dir, exist_ok=True)
    cache_dir = cache_dir or os.path.join(out_dir, "cache")
    os.makedirs(cache_dir, exist_ok=True)
    data_used = {"train": [c.case_id for c in cases["train"]], "validation": [c.case_id for c in cases["val"]],
                 "replay": [c.case_id for c in cases["replay"]]}
    if dist.main:
        write_json(os.path.join(out_dir, "config.json"), {"config": asdict(cfg), "defaults": asdict(net.training_defaults),
                                                           "world_size": dist.world, "device": str(device),
                                                           "cases": data_used})
        log(f"caching {sum(len(c) for c in cases.values())} cases in {cache_dir}")
    if guide is None and net.guide_channels:
        guide = _own_guide(net)
    files = _cache(cases, cache_dir, cfg, dist, guide)
    if cfg.carved_tumors:
        _one_grid(files["train"])
    net.to(device)
    lr = cfg.lr or net.training_defaults.lr
    optimizer = make_optimizer(net, lr)
    amp_dtype = _amp_dtype(cfg, device, log)
    use_scaler = amp_dtype == torch.float16
    scaler = (torch.amp.GradScaler("cuda", enabled=use_scaler) if hasattr(torch.amp, "GradScaler")
              else torch.cuda.amp.GradScaler(enabled=use_scaler))  # torch < 2.3
    model: torch.nn.Module = net
    if dist.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device] if device.type == "cuda" else None)
    scheduler = make_scheduler(optimizer, net.training_defaults, cfg.epochs, lr, cfg.schedule)
    return _Run(cfg, out_dir, dist, device, net, model, optimizer, scheduler, scaler, amp_dtype, files, data_used,
                log, history=[])


def _averaging(run: _Run) -> Dict[str, Any]:
    """What a checkpoint records of how its weights are averaged and its schedule, for a resume to check."""
    return {"schedule": schedule_of(run.net.training_defaults, run.cfg.schedule), "average_from": run.cfg.average_from}


def _resume(run: _Run) -> None:
    st = load_checkpoint(run.last_checkpoint)
    for key, now in _averaging(run).items():
        if key in st and st[key] != now:  # a schedule's state or an average means nothing under other settings
            raise InputError(run.last_checkpoint, f"was made with {key} {st[key]}; this run has {now}: resume it with "
                                                  "the same settings, or start a new run folder")
    run.net.load_state_dict(st["model"])
    run.optimizer.load_state_dict(st["optimizer"])
    run.scheduler.load_state_dict(st["scheduler"])
    if "scaler" in st:
        run.scaler.load_state_dict(st["scaler"])
    run.start_epoch, run.best, run.history = st["epoch"] + 1, st["best"], json.loads(st["history"])
    if run.dist.main:
        run.average, run.averaged = st.get("average"), int(st.get("averaged", 0))
    run.log(f"resumed after epoch {st['epoch']}")


def _one_grid(files: Sequence[str]) -> None:
    """Carving a tumor into another case needs every case on one working grid's voxel size."""
    first = None
    for f in files:
        with np.load(f) as z:
            spacing = tuple(float(v) for v in z["spacing"])
        first = first or (f, spacing)
        if not np.allclose(spacing, first[1], atol=1e-3):
            raise InputError(f, f"has {spacing} mm voxels where {os.path.basename(first[0])} has {first[1]}: "
                                "--carved-tumors needs every case on one grid")


def _dataset(run: _Run):
    cfg, dist = run.cfg, run.dist
    # each process draws its own share of the epoch's samples; `batch` is per process
    ds = PatchDataset(run.files["train"], tuple(cfg.patch or run.net.patch_size), cfg.iters_per_epoch * cfg.batch * dist.world,
                      cfg.seed, cfg.fg_fraction, cfg.domain_randomization, run.files["replay"], cfg.replay_fraction,
                      cfg.clinical_augmentation,
                      [cfg.case_weights.get(c, 1.0) for c in run.data_used["train"]] if cfg.case_weights else None,
                      run.net.guide_channels, cfg.augmentation, cfg.without_enhancement, cfg.fluid_cores,
                      cfg.fluid_without_enhancement, cfg.solid_cores, cfg.carved_tumors,
                      [f for c, f in zip(run.data_used["train"], run.files["train"])
                       if not cfg.carve_from or c in cfg.carve_from])
    sampler: Optional[torch.utils.data.distributed.DistributedSampler] = (
        torch.utils.data.distributed.DistributedSampler(ds, dist.world, dist.rank, shuffle=False)
        if dist.world > 1 else None)
    return ds, sampler


def _train_epoch(run: _Run, epoch: int, ds: PatchDataset, sampler) -> List[float]:
    cfg, device = run.cfg, run.device
    torch.manual_seed(cfg.seed * 100003 + epoch + 7919 * run.dist.rank)
    ds.epoch = epoch
    loader = torch.utils.data.DataLoader(ds, batch_size=cfg.batch, shuffle=False, sampler=sampler,
                                         num_workers=cfg.workers, pin_memory=device.type == "cuda")
    show, lines = run.dist.main, progress.lines_wanted()  # lines: for the Slicer module
    run.model.train()
    losses: List[float] = []
    for it, (x, y) in enumerate(loader):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        run.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=run.amp_dtype or torch.float32, enabled=run.amp_dtype is not None):
            out = run.model(x)
        loss = compute_loss(run.net, out, y, epoch)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        losses.append(loss.item())
        done = (epoch - run.start_epoch) * cfg.iters_per_epoch + it + 1
        fraction = done / ((cfg.epochs - run.start_epoch) * cfg.iters_per_epoch)
        if show and run.progress is not None:
            run.progress("training", fraction)
        elif show and lines:
            print(progress.format_line("training", fraction), flush=True)
        elif show:
            print(f"\repoch {epoch + 1}/{cfg.epochs} it {it + 1}/{cfg.iters_per_epoch} "
                  f"loss {np.mean(losses):.4f}", end="", file=sys.stderr)
    if show and not lines and run.progress is None:
        print("", file=sys.stderr)
    return losses


def _add_to_average(run: _Run) -> None:
    """The running mean of the epoch-end weights (integer buffers: the latest), kept on the CPU as
    checkpoints are loaded."""
    weights = {k: v.detach().to("cpu", copy=True) for k, v in run.net.state_dict().items()}
    run.averaged += 1
    if run.average is None:
        run.average = weights
        return
    for k, v in weights.items():
        avg = run.average[k]
        if avg.is_floating_point():
            avg += (v - avg) / run.averaged
        else:
            avg.copy_(v)


def _end_epoch(run: _Run, epoch: int, losses: List[float], seconds: float) -> None:
    """Mean loss over the job, the weights' average when due, validation when due, checkpoints,
    log and curves."""
    run.scheduler.step()
    if run.dist.main and run.cfg.average_from is not None and epoch + 1 >= run.cfg.average_from:
        _add_to_average(run)
    mean_loss = torch.tensor(float(np.mean(losses)), device=run.device)  # NCCL reduces GPU tensors only
    if run.dist.world > 1:
        torch.distributed.all_reduce(mean_loss)
        mean_loss /= run.dist.world
    row = {"epoch": epoch + 1, "train_loss": float(mean_loss), "lr": run.optimizer.param_groups[0]["lr"],
           "seconds": seconds}
    if run.dist.main:
        cfg, history = run.cfg, run.history
        assert history is not None
        if run.files["val"] and ((epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs):
            row.update(validate(run.net, cfg.network, run.files["val"], tuple(cfg.patch or run.net.patch_size), run.device))
            score = np.mean([row[f"dice_{r}"] for r in ("WT", "TC", "ET")])
            if score > run.best and cfg.average_from is None:  # an averaging run exports its average
                run.best = float(score)
                save_checkpoint(os.path.join(run.out_dir, BEST), {"model": run.net.state_dict(), "epoch": epoch})
        history.append(row)
        state = {"model": run.net.state_dict(), "optimizer": run.optimizer.state_dict(),
                 "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict(),
                 "rng": torch.get_rng_state(), "epoch": epoch, "best": run.best, "history": json.dumps(history),
                 **_averaging(run)}
        if run.average is not None:
            state.update(average=run.average, averaged=run.averaged)
        save_checkpoint(run.last_checkpoint, state)
        write_log(history, run.out_dir)
        run.log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    run.dist.barrier()


def _check_ranks_agree(run: _Run) -> None:
    """Every rank must end with the same weights (the all-reduce worked); recorded in distributed.json."""
    digests: List[Optional[str]] = [None] * run.dist.world
    torch.distributed.all_gather_object(digests, weights_digest(run.net))
    if run.dist.main:
        write_json(os.path.join(run.out_dir, "distributed.json"),
                   {"world_size": run.dist.world, "backend": torch.distributed.get_backend(),
                    "weights_sha256_per_rank": digests, "ranks_identical": len(set(digests)) == 1})
    if len(set(digests)) != 1:
        raise RuntimeError(f"ranks ended with different weights: {digests}")


def _export(run: _Run, bundle_manifest: Optional[Dict]) -> str:
    """The averaged weights (``cfg.average_from``), else the best checkpoint's, else the last, as a
    bundle in ``out_dir/model``."""
    export = os.path.join(run.out_dir, bundles.RUN_BUNDLE)
    if run.dist.world > 1:
        _check_ranks_agree(run)
    if run.dist.main:
        chosen = exported_checkpoint(run.cfg, run.out_dir)
        if os.path.exists(chosen):
            run.net.load_state_dict(exported_weights(load_checkpoint(chosen)))
        averaged = None
        if run.cfg.average_from is not None and run.files["val"]:
            averaged = validate(run.net, run.cfg.network, run.files["val"],
                                tuple(run.cfg.patch or run.net.patch_size), run.device)
            run.log("the averaged weights: " + " ".join(f"{k}={v:.4g}" for k, v in averaged.items()))
        manifest = run_manifest(run.cfg, run.out_dir, run.data_used, run.history or [], run.best, run.dist.world,
                                averaged)
        manifest.update(bundle_manifest or {})
        run.net.eval()
        if os.path.isdir(export):  # an earlier export of this same run (e.g. before --resume)
            shutil.rmtree(export)
        export = bundles.save(run.net.cpu(), export, manifest)
    run.dist.barrier()
    return export


def train(cfg: TrainConfig, train_cases: Sequence[TrainingCase], val_cases: Sequence[TrainingCase], out_dir: str,
          resume: bool = False, init_from: Optional[bundles.Bundle] = None,
          bundle_manifest: Optional[Dict] = None, log: Log = print, cache_dir: Optional[str] = None,
          replay_cases: Sequence[TrainingCase] = (), progress: Optional[Callable[[str, float], None]] = None,
          guide: Optional[Guide] = None) -> str:
    """Run (or resume) a training run in ``out_dir``; returns the exported bundle folder.

    Under torchrun every process runs this; rank 0 alone logs, validates, checkpoints and exports.

    Args:
        cfg: network, options, schedule length, batch, patch, seed, device, precision...
        train_cases, val_cases: cases with four sequences and a seg (see :func:`check_cases`), or
            the cases of a pack (``pack.read_pack``), cached already.
        out_dir: the run folder (config, checkpoints, log.csv, curves.png, the bundle in ``model``).
        resume: continue from ``out_dir/checkpoint_last.pt`` when it exists.
        init_from: start from this bundle's weights (fine-tuning) instead of a seeded initialisation.
        bundle_manifest: fields added to the exported bundle's manifest.
        log: where progress lines go.
        cache_dir: preprocessed cases (default ``out_dir/cache``); runs on the same files can share it.
        replay_cases: earlier cases mixed in with probability ``cfg.replay_fraction``.
        progress: called as ``progress("training", fraction)`` after every iteration (as ``segment``
            does); by default a line on stderr, or ``progress`` lines for the Slicer module.
        guide: a cascade's guide channels for the training cases (default: its own first stage's).
    """
    extras.require("train")
    run = _setup(cfg, {"train": train_cases, "val": val_cases, "replay": replay_cases}, out_dir, init_from, log,
                 cache_dir, guide)
    run.progress = progress
    if resume and os.path.exists(run.last_checkpoint):
        _resume(run)
    ds, sampler = _dataset(run)
    for epoch in range(run.start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        losses = _train_epoch(run, epoch, ds, sampler)
        _end_epoch(run, epoch, losses, time.perf_counter() - t0)
    export = _export(run, bundle_manifest)
    _leave(run)
    return export


def _leave(run: _Run) -> None:
    """Leave the process group while the interpreter is whole. The DistributedDataParallel wrapper
    holds the group, and its reference cycles kept it alive after ``train`` returned, until a
    garbage collection or the interpreter's exit; freed at the exit, a two-process CPU run aborted
    after it had finished ('terminate called without an active exception') in 1 of 8 runs here,
    none of 40 with the wrapper freed first."""
    if run.dist.world == 1:
        return
    run.model = run.net
    gc.collect()
    run.dist.barrier()
    if run.dist.started_here:
        torch.distributed.destroy_process_group()


def run_manifest(cfg: TrainConfig, out_dir: str, data_used: Dict[str, List[str]], history: List[Dict],
                 best: float, world_size: int = 1, averaged: Optional[Dict] = None) -> Dict:
    """The manifest of a run's bundle: architecture, preprocessing, training settings and data,
    the last validation Dice (callers add their own fields). For a run that averages its weights
    (``cfg.average_from``) the epochs validated other weights than it exports: ``averaged`` is the
    validation of the average (empty: none)."""
    last_val: Dict = next((r for r in reversed(history) if "dice_WT" in r), {})
    if cfg.average_from is not None:
        last_val = averaged or {}
        best = float(np.mean([last_val[f"dice_{r}"] for r in ("WT", "TC", "ET")])) if last_val else -1.0
    return {
        "id": os.path.basename(os.path.abspath(out_dir)), "version": "1", "network": cfg.network,
        "options": cfg.options, "label_scheme": cfg.label_scheme, "normalization": "z-score over brain voxels",
        # "LPS" is preprocess.grid.CANONICAL, not imported: training from a pack runs without SimpleITK
        "preprocessing": {"reference": REFERENCE, "canonical_orientation": "LPS", "crop": "brain bounding box",
                          "spacing_mm": cfg.spacing},
        "postprocessing": dict(NO_POSTPROCESSING),
        "training": {"config": asdict(cfg), "defaults": asdict(network_class(cfg.network).training_defaults),
                     "cases": len(data_used["train"]),
                     "validation_cases": len(data_used["validation"]), "epochs": cfg.epochs,
                     "world_size": world_size, "data": data_used},
        "metrics": {"validation": {k: v for k, v in last_val.items() if k.startswith("dice_")},
                    "best_mean_dice": best},
    }
