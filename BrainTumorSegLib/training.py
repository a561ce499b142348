"""Training and fine-tuning: data cache, patch sampling, augmentation, losses per paper, loop,
atomic resumable checkpoints, validation with the BraTS metrics, and bundle export.

Determinism: every random choice of sample ``i`` in epoch ``e`` comes from a generator seeded
with ``(seed, e, i)``, and torch's own generator is reseeded at each epoch start, so a run
resumed from an epoch checkpoint continues exactly as an uninterrupted one (on the CPU).
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from . import bundles, devices, extras, progress
from .atomicfile import replacing, write_json
from .cases import SEQUENCES, Case
from .errors import InputError
from .imageio import read_image, same_grid
from .inference import SegmentOptions, cpu_has_fast_bf16, predict_probabilities, probabilities_to_labels
from .labels import check_scheme, detect_scheme, labels_to_classes
from .metrics import case_metrics
from .networks import SegmentationNetwork, TrainingDefaults, build, network_class
from .preprocessing import PreprocessOptions, labels_to_working, preprocess
from .runlog import write_log


@dataclass
class TrainConfig:
    network: str = "resunet"
    options: Dict = field(default_factory=dict)
    epochs: int = 20
    iters_per_epoch: int = 50
    batch: int = 2
    patch: Optional[Tuple[int, int, int]] = None
    lr: Optional[float] = None
    seed: int = 0
    fg_fraction: float = 1 / 3
    val_every: int = 5
    workers: int = 0
    amp: bool = False
    label_scheme: str = "brats2021"
    domain_randomization: bool = False
    device: str = "auto"
    gradient_checkpointing: bool = False
    freeze_encoder: bool = False
    replay_fraction: float = 0.0  # share of samples drawn from the replay cases (fine-tuning)
    spacing: Optional[float] = None  # isotropic working spacing in mm (None: the reference grid's own)


# ----------------------------------------------------------------------------- data

def check_cases(cases: Sequence[Case], skip_bad: bool = False) -> List[Case]:
    """Keep cases with four readable sequences and a seg on the T1ce grid with BraTS labels."""
    good, bad = [], []
    for c in cases:
        try:
            c.require(SEQUENCES + ("seg",))
            ref = read_image(c.paths["t1ce"])
            seg = read_image(c.paths["seg"], "label")
            detect_scheme(sitk.GetArrayViewFromImage(seg), c.paths["seg"])
            if not same_grid(seg, ref):
                raise InputError(c.paths["seg"], "is not on the grid of the T1ce image")
            good.append(c)
        except InputError as exc:
            bad.append(f"{c.case_id}: {exc}")
    if bad and not skip_bad:
        raise InputError(None, f"{len(bad)} bad case(s): " + "; ".join(bad[:5]) + (" ..." if len(bad) > 5 else ""))
    for b in bad:
        print(f"warning: skipping {b}", file=sys.stderr)
    if not good:
        raise InputError(None, "no usable training case")
    return good


def cache_case(case: Case, cache_dir: str, spacing: Optional[float] = None) -> str:
    """Preprocess one case once (at ``spacing`` mm when given): (C, z, y, x) float16 data, class
    labels, spacing."""
    key = hashlib.sha256(("|".join(f"{r}={os.path.abspath(p)}:{os.path.getmtime(p)}"
                                   for r, p in sorted(case.paths.items())) + f"|spacing={spacing}").encode()
                         ).hexdigest()[:16]
    path = os.path.join(cache_dir, f"{case.case_id}-{key}.npz")
    if os.path.exists(path):
        return path
    pre = preprocess(case.sequences, PreprocessOptions(isotropic=spacing))
    seg_img = read_image(case.paths["seg"], "label")
    seg = labels_to_working(seg_img, pre.inverse)
    scheme = detect_scheme(seg, case.paths["seg"])
    classes = labels_to_classes(seg, scheme)
    fg = np.argwhere(classes > 0)
    if len(fg) > 20000:
        fg = fg[np.random.default_rng(0).choice(len(fg), 20000, replace=False)]
    buf = io.BytesIO()
    np.savez(buf, data=pre.data.astype(np.float16), classes=classes.astype(np.uint8),
             fg=fg.astype(np.int32), spacing=np.array(pre.spacing))
    with replacing(path) as tmp, open(tmp, "wb") as f:
        f.write(buf.getvalue())
    return path


class CachedCase:
    def __init__(self, path: str) -> None:
        with np.load(path) as z:
            self.data = z["data"]
            self.classes = z["classes"]
            self.fg = z["fg"]
            self.spacing = tuple(float(s) for s in z["spacing"])
        self.case_id = os.path.basename(path).rsplit("-", 1)[0]


def _crop(arr: np.ndarray, start: Sequence[int], patch: Sequence[int]) -> np.ndarray:
    """Crop (..., z, y, x) at ``start`` with zero padding where the patch leaves the volume."""
    shape = arr.shape[-3:]
    out = np.zeros(arr.shape[:-3] + tuple(patch), arr.dtype)
    src, dst = [], []
    for s, p, n in zip(start, patch, shape):
        a, b = max(s, 0), min(s + p, n)
        src.append(slice(a, b))
        dst.append(slice(a - s, b - s))
    out[(Ellipsis,) + tuple(dst)] = arr[(Ellipsis,) + tuple(src)]
    return out


def sample_patch(case: CachedCase, patch: Sequence[int], rng: np.random.Generator,
                 fg_fraction: float) -> Tuple[np.ndarray, np.ndarray]:
    shape = case.classes.shape
    if len(case.fg) and rng.random() < fg_fraction:
        centre = case.fg[rng.integers(len(case.fg))]
        start = [int(c) - p // 2 + int(rng.integers(-p // 4, p // 4 + 1)) for c, p in zip(centre, patch)]
    else:
        start = [int(rng.integers(min(0, n - p), max(0, n - p) + 1)) for n, p in zip(shape, patch)]
    return _crop(case.data, start, patch).astype(np.float32), _crop(case.classes, start, patch)


def augment(x: np.ndarray, y: np.ndarray, rng: np.random.Generator,
            domain_randomization: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Flips, rotation/scaling, intensity shift/scale, gamma, noise, blur, bias field,
    sequence dropping; all from ``rng``."""
    for ax in (1, 2, 3):
        if rng.random() < 0.5:
            x = np.flip(x, ax)
            y = np.flip(y, ax - 1)
    x, y = np.ascontiguousarray(x), np.ascontiguousarray(y)
    if rng.random() < 0.2:  # rotation about the axial axis and isotropic scaling
        angle = rng.uniform(-0.5, 0.5)
        scale = rng.uniform(0.85, 1.15)
        c, s = math.cos(angle) / scale, math.sin(angle) / scale
        theta = torch.tensor([[[1 / scale, 0, 0, 0], [0, c, -s, 0], [0, s, c, 0]]], dtype=torch.float32)
        grid = F.affine_grid(theta, [1, 1, *y.shape], align_corners=False)
        x = F.grid_sample(torch.from_numpy(x)[None], grid, mode="bilinear", align_corners=False)[0].numpy()
        y = F.grid_sample(torch.from_numpy(y[None, None].astype(np.float32)), grid, mode="nearest",
                          align_corners=False)[0, 0].numpy().astype(np.uint8)
    brain = x.any(0)
    for c in range(x.shape[0]):
        x[c] = x[c] * rng.uniform(0.9, 1.1) + rng.uniform(-0.1, 0.1)
        if rng.random() < 0.15:  # gamma on the channel's own range
            lo, hi = x[c].min(), x[c].max()
            if hi > lo:
                x[c] = lo + (hi - lo) * ((x[c] - lo) / (hi - lo)) ** rng.uniform(0.7, 1.5)
    if rng.random() < 0.15:
        x = x + rng.normal(0, rng.uniform(0, 0.1), x.shape).astype(np.float32)
    if rng.random() < 0.1:
        from scipy.ndimage import gaussian_filter
        x = gaussian_filter(x, (0,) + (rng.uniform(0.5, 1.0),) * 3).astype(np.float32)
    if rng.random() < 0.15:  # smooth multiplicative bias field
        zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in y.shape], indexing="ij")
        a = rng.uniform(-0.3, 0.3, 3)
        x = x * np.exp(a[0] * zz + a[1] * yy + a[2] * xx)[None]
    if domain_randomization:  # random contrast per channel: rescaled, sometimes inverted, inside the brain
        for c in range(x.shape[0]):
            if rng.random() < 0.3:
                x[c] = np.where(brain, (1 if rng.random() < 0.7 else -1) * x[c] * rng.uniform(0.5, 1.5), x[c])
    if rng.random() < 0.1:  # drop one sequence, as if it were missing
        x[rng.integers(x.shape[0])] = 0
    return x.astype(np.float32), y


class PatchDataset(torch.utils.data.Dataset):
    def __init__(self, cache_files: Sequence[str], patch: Sequence[int], batches: int, seed: int,
                 fg_fraction: float, domain_randomization: bool, replay_files: Sequence[str] = (),
                 replay_fraction: float = 0.0) -> None:
        self.files = list(cache_files)
        self.replay = list(replay_files)
        self.replay_fraction = replay_fraction if self.replay else 0.0
        self.patch = tuple(patch)
        self.n = batches
        self.seed = seed
        self.epoch = 0
        self.fg_fraction = fg_fraction
        self.dr = domain_randomization
        self._cache: Dict[str, CachedCase] = {}

    def __len__(self) -> int:
        return self.n

    def _case(self, f: str) -> CachedCase:
        if f not in self._cache:
            self._cache[f] = CachedCase(f)
        return self._cache[f]

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.seed, self.epoch, i])
        pool = self.replay if rng.random() < self.replay_fraction else self.files
        case = self._case(pool[int(rng.integers(len(pool)))])
        x, y = sample_patch(case, self.patch, rng, self.fg_fraction)
        x, y = augment(x, y, rng, self.dr)
        return torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))


# ----------------------------------------------------------------------------- losses

def compute_loss(net: SegmentationNetwork, out: Dict, classes: torch.Tensor, epoch: int) -> torch.Tensor:
    """The network's own loss (its paper's) on its training-mode outputs, computed in fp32."""
    out = {k: (v.float() if torch.is_tensor(v) else [t.float() for t in v]) for k, v in out.items()}
    return net.loss(out, classes, epoch)


# ----------------------------------------------------------------------------- loop

def make_optimizer(net: SegmentationNetwork, lr: float) -> torch.optim.Optimizer:
    """The network's optimiser over its trainable parameters."""
    d = net.training_defaults
    params = [p for p in net.parameters() if p.requires_grad]
    opt_class = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[d.optimizer]
    return opt_class(params, lr=lr, weight_decay=d.weight_decay)


def make_scheduler(opt: torch.optim.Optimizer, defaults: TrainingDefaults, total_epochs: int, lr: float):
    """The network's learning-rate schedule over ``total_epochs``."""
    if defaults.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total_epochs), eta_min=lr * 0.01)
    if defaults.schedule == "step":
        assert defaults.step_lr is not None
        return torch.optim.lr_scheduler.MultiStepLR(opt, [max(1, int(total_epochs * 0.7))],
                                                    gamma=defaults.step_lr / defaults.lr)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0)


def save_checkpoint(path: str, state: Dict) -> None:
    with replacing(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str) -> Dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def validate(net, name: str, val_files: Sequence[str], patch, device: torch.device) -> Dict[str, float]:
    """Mean Dice per region over validation cases, by full sliding-window inference."""
    if not val_files:
        return {}
    net.eval()
    bundle = bundles.Bundle("(training)", {"output_kind": net.output_kind, "patch_size": list(patch),
                                           "network": name}, net)
    dices: Dict[str, List[float]] = {"WT": [], "TC": [], "ET": []}
    for f in val_files:
        c = CachedCase(f)
        probs = predict_probabilities(c.data.astype(np.float32), [bundle], device,
                                      SegmentOptions(overlap=0.25, backend="torch")).probabilities
        pred = probabilities_to_labels(probs, net.output_kind, "brats2021")
        ref = np.array([0, 1, 2, 4], np.uint8)[c.classes]
        m = case_metrics(pred, ref, c.spacing, check_scheme(pred, "brats2021"), check_scheme(ref, "brats2021"))
        for r in dices:
            dices[r].append(m[r]["dice"])
    return {f"dice_{r}": float(np.mean(v)) for r, v in dices.items()}


def weights_digest(net: torch.nn.Module) -> str:
    """sha256 over the state dict (names, then bytes in name order)."""
    h = hashlib.sha256()
    for k, v in sorted(net.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- distributed

@dataclass
class Distributed:
    """Where this process sits in a torchrun job (rank 0 of 1 when run alone)."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    started_here: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def init_distributed(device: str = "auto") -> Tuple[Distributed, torch.device]:
    """Under torchrun (``WORLD_SIZE`` > 1) join the process group: NCCL with one GPU per process
    (``LOCAL_RANK``), gloo on CPUs. Alone: the device ``devices.resolve`` picks."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed(), devices.resolve(device)
    pref = (device or "auto").lower()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if pref.startswith("cuda") or (pref == "auto" and torch.cuda.is_available()):
        devices.resolve("cuda")  # a one-line error when there is no GPU
        dev = torch.device(f"cuda:{local % torch.cuda.device_count()}")
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")  # MPS has no DistributedDataParallel backend
    started = not torch.distributed.is_initialized()
    if started:
        torch.distributed.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Distributed(torch.distributed.get_rank(), torch.distributed.get_world_size(), local, started), dev


def _amp_dtype(cfg: TrainConfig, device: torch.device, log) -> Optional[torch.dtype]:
    if not cfg.amp:
        return None
    dtype = devices.autocast_dtype(device, cpu_bf16=cpu_has_fast_bf16())
    if dtype is None:
        log(f"note: --amp has no effect on {device.type} here (no native bf16); training in fp32")
    return dtype


# ----------------------------------------------------------------------------- loop

def train(cfg: TrainConfig, train_cases: Sequence[Case], val_cases: Sequence[Case], out_dir: str,
          resume: bool = False, init_from: Optional[bundles.Bundle] = None,
          bundle_manifest: Optional[Dict] = None, log=print, cache_dir: Optional[str] = None,
          replay_cases: Sequence[Case] = ()) -> str:
    """Run (or resume) a training run in ``out_dir``; returns the exported bundle folder.

    Under torchrun every process runs this; rank 0 alone logs, validates, checkpoints and exports.

    Args:
        cfg: network, options, schedule length, batch, patch, seed, device, precision...
        train_cases, val_cases: cases with four sequences and a seg (see :func:`check_cases`).
        out_dir: the run folder (config, checkpoints, log.csv, curves.png, the bundle in ``model``).
        resume: continue from ``out_dir/checkpoint_last.pt`` when it exists.
        init_from: start from this bundle's weights (fine-tuning) instead of a seeded initialisation.
        bundle_manifest: fields added to the exported bundle's manifest.
        log: where progress lines go.
        cache_dir: preprocessed cases (default ``out_dir/cache``); runs on the same files can share it.
        replay_cases: earlier cases mixed in with probability ``cfg.replay_fraction``.
    """
    extras.require("train")
    dist, device = init_distributed(cfg.device)
    if not dist.main:
        log = lambda *a, **k: None  # noqa: E731 - rank 0 speaks for the job
    os.makedirs(out_dir, exist_ok=True)
    cache_dir = cache_dir or os.path.join(out_dir, "cache")
    os.makedirs(cache_dir, exist_ok=True)
    name = cfg.network
    torch.manual_seed(cfg.seed)  # the initial weights are part of the run's reproducibility
    net = init_from.network if init_from is not None else build(name, **cfg.options)
    patch = tuple(cfg.patch or net.patch_size)
    lr = cfg.lr or net.training_defaults.lr
    if cfg.freeze_encoder:
        for prm in net.encoder_parameters():
            prm.requires_grad_(False)
    if cfg.gradient_checkpointing:
        net.enable_gradient_checkpointing()
    data_used = {"train": [c.case_id for c in train_cases], "validation": [c.case_id for c in val_cases],
                 "replay": [c.case_id for c in replay_cases]}
    if dist.main:
        write_json(os.path.join(out_dir, "config.json"), {"config": asdict(cfg), "defaults": asdict(net.training_defaults),
                                                           "world_size": dist.world, "device": str(device),
                                                           "cases": data_used})
        log(f"caching {len(train_cases) + len(val_cases) + len(replay_cases)} cases in {cache_dir}")
    if not dist.main:
        dist.barrier()  # rank 0 fills the cache first; the others then find every case in it
    files = {k: [cache_case(c, cache_dir, cfg.spacing) for c in cs]
             for k, cs in (("train", train_cases), ("val", val_cases), ("replay", replay_cases))}
    if dist.main:
        dist.barrier()
    net.to(device)
    opt = make_optimizer(net, lr)
    sched = make_scheduler(opt, net.training_defaults, cfg.epochs, lr)
    amp_dtype = _amp_dtype(cfg, device, log)
    use_scaler = amp_dtype == torch.float16
    scaler = (torch.amp.GradScaler("cuda", enabled=use_scaler) if hasattr(torch.amp, "GradScaler")
              else torch.cuda.amp.GradScaler(enabled=use_scaler))  # torch < 2.3
    ckpt_last = os.path.join(out_dir, "checkpoint_last.pt")
    start_epoch, best, history = 0, -1.0, []
    if resume and os.path.exists(ckpt_last):
        st = load_checkpoint(ckpt_last)
        net.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        if "scaler" in st:
            scaler.load_state_dict(st["scaler"])
        start_epoch, best, history = st["epoch"] + 1, st["best"], json.loads(st["history"])
        log(f"resumed after epoch {st['epoch']}")
    model: torch.nn.Module = net
    if dist.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device] if device.type == "cuda" else None)
    # each process draws its own share of the epoch's samples; `batch` is per process
    ds = PatchDataset(files["train"], patch, cfg.iters_per_epoch * cfg.batch * dist.world, cfg.seed,
                      cfg.fg_fraction, cfg.domain_randomization, files["replay"], cfg.replay_fraction)
    sampler: Optional[torch.utils.data.distributed.DistributedSampler] = (
        torch.utils.data.distributed.DistributedSampler(ds, dist.world, dist.rank, shuffle=False)
        if dist.world > 1 else None)
    show = dist.main and log is not None
    progress_lines = progress.lines_wanted()  # for the Slicer module
    for epoch in range(start_epoch, cfg.epochs):
        torch.manual_seed(cfg.seed * 100003 + epoch + 7919 * dist.rank)
        ds.epoch = epoch
        loader = torch.utils.data.DataLoader(ds, batch_size=cfg.batch, shuffle=False, sampler=sampler,
                                             num_workers=cfg.workers, pin_memory=device.type == "cuda")
        model.train()
        t0, losses = time.perf_counter(), []
        for it, (x, y) in enumerate(loader):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                out = model(x)
            loss = compute_loss(net, out, y, epoch)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            losses.append(loss.item())
            if show and progress_lines:
                done = (epoch - start_epoch) * cfg.iters_per_epoch + it + 1
                print(progress.format_line("training", done / ((cfg.epochs - start_epoch) * cfg.iters_per_epoch)),
                      flush=True)
            elif show:
                print(f"\repoch {epoch + 1}/{cfg.epochs} it {it + 1}/{cfg.iters_per_epoch} "
                      f"loss {np.mean(losses):.4f}", end="", file=sys.stderr)
        if show and not progress_lines:
            print("", file=sys.stderr)
        sched.step()
        mean_loss = torch.tensor(float(np.mean(losses)), device=device)  # NCCL reduces GPU tensors only
        if dist.world > 1:
            torch.distributed.all_reduce(mean_loss)
            mean_loss /= dist.world
        row = {"epoch": epoch + 1, "train_loss": float(mean_loss), "lr": opt.param_groups[0]["lr"],
               "seconds": time.perf_counter() - t0}
        if dist.main:
            if files["val"] and ((epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs):
                row.update(validate(net, name, files["val"], patch, device))
                score = np.mean([row[f"dice_{r}"] for r in ("WT", "TC", "ET")])
                if score > best:
                    best = float(score)
                    save_checkpoint(os.path.join(out_dir, "checkpoint_best.pt"),
                                    {"model": net.state_dict(), "epoch": epoch})
            history.append(row)
            save_checkpoint(ckpt_last, {"model": net.state_dict(), "optimizer": opt.state_dict(),
                                        "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
                                        "rng": torch.get_rng_state(), "epoch": epoch, "best": best,
                                        "history": json.dumps(history)})
            write_log(history, out_dir)
            log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        dist.barrier()
    export = os.path.join(out_dir, "model")
    if dist.world > 1:
        digests: List[Optional[str]] = [None] * dist.world
        torch.distributed.all_gather_object(digests, weights_digest(net))
        if dist.main:
            write_json(os.path.join(out_dir, "distributed.json"),
                       {"world_size": dist.world, "backend": torch.distributed.get_backend(),
                        "weights_sha256_per_rank": digests, "ranks_identical": len(set(digests)) == 1})
        if len(set(digests)) != 1:
            raise RuntimeError(f"ranks ended with different weights: {digests}")
    if dist.main:
        best_path = os.path.join(out_dir, "checkpoint_best.pt")
        if os.path.exists(best_path):
            net.load_state_dict(load_checkpoint(best_path)["model"])
        manifest = run_manifest(cfg, out_dir, data_used, history, best, dist.world)
        manifest.update(bundle_manifest or {})
        net.eval()
        if os.path.isdir(export):  # an earlier export of this same run (e.g. before --resume)
            shutil.rmtree(export)
        export = bundles.save(net.cpu(), export, manifest)
    dist.barrier()
    if dist.started_here:
        torch.distributed.destroy_process_group()
    return export


def run_manifest(cfg: TrainConfig, out_dir: str, data_used: Dict[str, List[str]], history: List[Dict],
                 best: float, world_size: int = 1) -> Dict:
    """The manifest of a run's bundle: architecture, preprocessing, training settings and data,
    the last validation Dice (callers add their own fields)."""
    last_val: Dict = next((r for r in reversed(history) if "dice_WT" in r), {})
    return {
        "id": os.path.basename(os.path.abspath(out_dir)), "version": "1", "network": cfg.network,
        "options": cfg.options, "label_scheme": cfg.label_scheme, "normalization": "z-score over brain voxels",
        "preprocessing": {"reference": "t1ce", "canonical_orientation": "LPS", "crop": "brain bounding box",
                          "spacing_mm": cfg.spacing},
        "postprocessing": {"min_et_voxels": 0, "min_component_voxels": 0, "fill_core_holes": False},
        "training": {"config": asdict(cfg), "defaults": asdict(network_class(cfg.network).training_defaults),
                     "cases": len(data_used["train"]),
                     "validation_cases": len(data_used["validation"]), "epochs": cfg.epochs,
                     "world_size": world_size, "data": data_used},
        "metrics": {"validation": {k: v for k, v in last_val.items() if k.startswith("dice_")},
                    "best_mean_dice": best},
    }


FINETUNE_LR_FACTOR = 0.1  # fine-tuning starts from trained weights: a tenth of the network's learning rate


def finetune(model: Union[str, bundles.Bundle], train_cases: Sequence[Case], val_cases: Sequence[Case],
             out_dir: str, cfg: Optional[TrainConfig] = None, replay_cases: Sequence[Case] = (),
             resume: bool = False, log=print) -> str:
    """Continue training a model bundle on new cases (e.g. corrected in Slicer).

    Network, options, label scheme and (unless given) patch size come from the bundle; the
    learning rate defaults to ``FINETUNE_LR_FACTOR`` times the network's.

    Args:
        model: the bundle to start from (installed name, folder, or a loaded bundle).
        train_cases, val_cases: the new cases, and cases to validate on (may be empty).
        out_dir: the run folder.
        cfg: training settings (network, options and label scheme are taken from the bundle).
        replay_cases: earlier training data mixed in so the model does not forget them.
        resume: continue an interrupted fine-tuning in ``out_dir``.
        log: where progress lines go.
    """
    b = model if isinstance(model, bundles.Bundle) else bundles.load(model)
    m = b.manifest
    name = m["network"]
    given = cfg or TrainConfig()
    trained = m.get("training", {}).get("config", {})
    patch = given.patch or trained.get("patch") or m["patch_size"]
    cfg = replace(given, network=name, options=dict(m.get("options", {})),
                  label_scheme=m.get("label_scheme", given.label_scheme),
                  lr=given.lr or b.network.training_defaults.lr * FINETUNE_LR_FACTOR,
                  patch=(int(patch[0]), int(patch[1]), int(patch[2])),
                  # the working spacing the bundle was trained at (its manifest says so)
                  spacing=(m.get("preprocessing") or {}).get("spacing_mm", given.spacing),
                  replay_fraction=given.replay_fraction or (0.3 if replay_cases else 0.0))
    extra = {"finetuned_from": {"id": m["id"], "weights_sha256": m.get("weights_sha256")},
             "description": f"Fine-tuned from {m['id']} on {len(train_cases)} case(s)"
                            + (f" with {len(replay_cases)} replayed" if replay_cases else "")
                            + ". Not validated for clinical use.",
             "clinical_use": False, "patch_size": list(m["patch_size"])}
    return train(cfg, train_cases, val_cases, out_dir, resume=resume, init_from=b, bundle_manifest=extra,
                 log=log, replay_cases=replay_cases)
