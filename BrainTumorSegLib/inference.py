"""The inference engine: ``segment`` turns four sequences into tumor labels on the T1ce grid.

Steps: preprocessing (common grid, canonical orientation, brain crop, z-score), sliding-window
prediction with Gaussian weighting (windows batched, small volumes padded), optional mirror
test-time augmentation (all 8 flips) and ensembles (probabilities averaged), labels from
probabilities, postprocessing, and the inverse transform onto the reference input's grid.
Nothing is written here; the caller writes the returned images (atomically).
"""
from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk
import torch

from . import backends, bundles, devices, outputs
from .cases import OPTIONAL_SEQUENCES, sequences_needed
from .errors import Cancelled, InputError
from .imageio import geometry, same_grid, voxel_volume_ml
from .labels import REGIONS, get_scheme, labels_to_regions
from .postprocessing import PostprocessOptions, postprocess
from .preprocessing import Preprocessed, PreprocessOptions, preprocess
from .segment_options import SegmentOptions  # declared once there; the API's name stays here
from .sliding_window import sliding_window, tiles_cover

Progress = Callable[[str, float], None]   # (stage, fraction 0..1)
ArrayInput = Tuple[np.ndarray, Dict]      # (array z, y, x; {"spacing", "origin", "direction"})
REFERENCE = "t1ce"                         # the labels come out on this sequence's grid


@dataclass
class SegmentationResult:
    labels: sitk.Image
    label_scheme: str
    volumes_ml: Dict[str, float]
    timings: Dict[str, float]
    device: str
    models: List[Dict]
    uncertainty: Optional[sitk.Image] = None
    probabilities: Optional[np.ndarray] = None        # on the cropped working grid
    backend: str = "torch"
    warnings: List[str] = field(default_factory=list)
    input_geometry: Dict = field(default_factory=dict)
    preprocessing: Dict = field(default_factory=dict)  # registration, skull stripping, working grid: what and why
    brain_mask: Optional[sitk.Image] = None            # on the reference grid (HD-BET's when stripped), when asked for
    ensembles: List[Dict[str, str]] = field(default_factory=list)  # ensembles named (their members are in models)
    model: str = ""                                    # what ran, as asked for: a model's or an ensemble's id

    def report(self) -> Dict:
        from . import __version__

        return {
            "braintumorseg_version": __version__,
            "model": self.model,
            "models": self.models,
            "ensembles": self.ensembles,
            "device": self.device,
            "backend": self.backend,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "volumes_ml": {k: round(v, 3) for k, v in self.volumes_ml.items()},
            "label_scheme": self.label_scheme,
            "input_geometry": self.input_geometry,
            "preprocessing": self.preprocessing,
            "warnings": self.warnings,
        }


def _to_image(value: Union[str, sitk.Image, ArrayInput], role: str):
    if isinstance(value, tuple):
        arr, geo = value
        arr = np.asarray(arr)
        if arr.ndim != 3:
            raise InputError(role, f"array of {arr.ndim} dimensions; a 3D (z, y, x) array is expected")
        img = sitk.GetImageFromArray(arr.astype(np.float32))
        img.SetSpacing([float(v) for v in geo.get("spacing", (1, 1, 1))])
        img.SetOrigin([float(v) for v in geo.get("origin", (0, 0, 0))])
        if "direction" in geo:
            img.SetDirection([float(v) for v in geo["direction"]])
        return img
    return value


def volumes(labels: np.ndarray, scheme: str, voxel_ml: float) -> Dict[str, float]:
    s = get_scheme(scheme)
    out = {name: float(np.count_nonzero(labels == s.class_value(name))) * voxel_ml for name in ("NCR", "ED", "ET")}
    regions = labels_to_regions(labels, s)
    out.update({r: float(regions[i].sum()) * voxel_ml for i, r in enumerate(REGIONS)})
    return out


def _flips(tta: bool) -> List[Tuple[int, ...]]:
    if not tta:
        return [()]
    axes = (2, 3, 4)
    return [c for n in range(4) for c in itertools.combinations(axes, n)]


class _Predictor:
    """Runs one network on batches with the right backend, precision, flips and activation."""

    def __init__(self, bundle: bundles.Bundle, device: torch.device, flips, cpu_bf16: bool,
                 backend: str = "torch", window: Tuple[int, ...] = (), windows: int = 1) -> None:
        self.net = bundle.network.to(device).eval()
        self.kind = bundle.manifest.output
        self.device = device
        self.flips = flips
        self.cpu_bf16 = cpu_bf16
        self.backend: str = "torch"
        self._openvino: Optional[backends.Forward] = None
        sha = bundle.manifest.weights_sha256
        if backend != "torch" and sha and window:  # the exported network is cached by its weights' digest
            shape = (1, len(bundle.manifest.in_sequences)) + tuple(window)
            self.backend, self._openvino = backends.choose(backend, device, self.net, sha, shape,
                                                           self._torch_forward, windows * len(flips))

    def _torch_forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), self._autocast():
            return self.net(x).float()

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.to(self.device)
        acc: Optional[torch.Tensor] = None
        for f in self.flips:
            xi = torch.flip(x, f) if f else x
            logits = self._openvino(xi) if self._openvino is not None else self._torch_forward(xi)
            p = self.kind.activation(logits)
            p = torch.flip(p, f) if f else p
            acc = p if acc is None else acc + p
        assert acc is not None  # at least the identity flip
        return acc / len(self.flips)

    def _autocast(self):
        dtype = devices.autocast_dtype(self.device, self.cpu_bf16)
        if dtype is None:
            return torch.autocast("cpu", enabled=False)
        return torch.autocast(self.device.type, dtype=dtype)


def _predict(data: torch.Tensor, bundle: bundles.Bundle, device: torch.device, opts: SegmentOptions,
             progress: Optional[Progress], cancel: Optional[threading.Event], out_device: torch.device,
             stage: str, used: List[str]) -> torch.Tensor:
    bf16 = devices.cpu_has_fast_bf16() if opts.precision == "auto" else opts.precision == "bf16"
    window = tuple(bundle.manifest.patch_size)
    # a cascade's first stage may narrow where the windows go (networks.dmda_unet); elsewhere: everywhere
    net = bundle.network.to(device).eval()
    with torch.inference_mode():
        box = net.region_of_interest(data.to(device))
    region = tuple(data.shape[1:]) if box is None else tuple(b.stop - b.start for b in box)
    pred = _Predictor(bundle, device, _flips(opts.tta), bf16, opts.backend, window,
                      tiles_cover(region, window, opts.overlap))
    used.append(pred.backend)
    channels = pred.kind.channels

    def prog(done: int, total: int) -> None:
        if progress:
            progress(stage, done / total)

    if box is None:
        return sliding_window(data, pred, window, channels, opts.overlap, opts.batch_size,
                              progress=prog, cancel=cancel, out_device=out_device)
    out = torch.zeros((channels,) + tuple(data.shape[1:]), device=out_device)
    sub = data[(slice(None),) + box]
    out[(slice(None),) + box] = sliding_window(sub, pred, window, channels, opts.overlap, opts.batch_size,
                                               progress=prog, cancel=cancel, out_device=out_device)
    return out


class Prediction(NamedTuple):
    probabilities: np.ndarray
    device: str
    notes: List[str]
    backend: str        # torch, openvino, or both joined by "+" for an ensemble that used both


def predict_probabilities(data: np.ndarray, models: Sequence[bundles.Bundle], device: torch.device,
                          opts: SegmentOptions, progress: Optional[Progress] = None,
                          cancel: Optional[threading.Event] = None) -> Prediction:
    """Average probabilities of ``models`` over a preprocessed (C, z, y, x) array.

    On CUDA out-of-memory: retry with stitching on the CPU, then entirely on the CPU.
    """
    kinds = {m.manifest.output_kind for m in models}
    if len(kinds) != 1:
        raise InputError(None, "an ensemble must combine models of one output kind (all softmax or all sigmoid)")
    x = torch.from_numpy(data)
    notes: List[str] = []
    attempts = [(device, device)]
    if device.type == "cuda":
        attempts += [(device, torch.device("cpu")), (torch.device("cpu"), torch.device("cpu"))]
    for k, (dev, out_dev) in enumerate(attempts):
        try:
            total: Optional[torch.Tensor] = None
            used: List[str] = []
            for i, m in enumerate(models):
                p = _predict(x, m, dev, opts, progress, cancel, out_dev, f"predict {i + 1}/{len(models)}", used)
                total = p if total is None else total + p
            assert total is not None  # at least one model
            probs = (total / len(models)).cpu().numpy()
            return Prediction(probs, str(dev), notes, "+".join(dict.fromkeys(used)))
        except torch.cuda.OutOfMemoryError:  # pragma: no cover - needs a GPU
            torch.cuda.empty_cache()
            if k + 1 == len(attempts):
                raise InputError(None, "out of GPU memory even with CPU stitching, and CPU fallback failed") from None
            nxt = attempts[k + 1]
            notes.append(f"out of GPU memory on {dev}; retrying with {'CPU stitching' if nxt[0].type == 'cuda' else 'the CPU'}")
    raise AssertionError("unreachable")


def entropy_map(probs: np.ndarray, kind: str) -> np.ndarray:
    """Voxel-wise uncertainty in [0, 1] (see :mod:`outputs`)."""
    return outputs.kind(kind).entropy(probs)


def probabilities_to_labels(probs: np.ndarray, kind: str, scheme: str) -> np.ndarray:
    return outputs.kind(kind).to_labels(probs, scheme)


def model_spacing(models: Sequence[bundles.Bundle]) -> Optional[float]:
    """The isotropic working spacing (mm) the models were trained at, or None for the input's own.

    Models of an ensemble must agree: their probabilities are averaged voxel by voxel.
    """
    found = {m.manifest.spacing_mm for m in models}
    if len(found) != 1:
        raise InputError(models[-1].path, "an ensemble's models must work at one spacing; "
                                          f"these use {sorted(str(f) for f in found)} mm")
    return found.pop()


class ModelPart(NamedTuple):
    """One model asked for: a bundle, or an ensemble with its members."""

    id: str
    path: str
    bundles: List[bundles.Bundle]
    ensemble: bool
    note: Optional[str] = None   # an ensemble's own note (each member has its own too)


@dataclass(frozen=True)
class Models:
    """What a segmentation runs, loaded once (:func:`load_ensemble`); ``load_s`` is how long the
    loading took (0 when the models are reused for another case)."""

    parts: Tuple[ModelPart, ...]
    load_s: float = 0.0

    @property
    def members(self) -> List[bundles.Bundle]:
        """Every network whose probabilities are averaged."""
        return [b for p in self.parts for b in p.bundles]

    @property
    def ensembles(self) -> List[Dict[str, str]]:
        """The ensembles asked for (id and folder; their members are in :attr:`members`)."""
        return [{"id": p.id, "path": p.path} for p in self.parts if p.ensemble]

    @property
    def name(self) -> str:
        """What runs, as asked for: ``brats-glioma-ensemble-v1``, or ``a + b`` for models listed."""
        return " + ".join(p.id for p in self.parts)

    @property
    def description(self) -> str:
        """:attr:`name` with each ensemble's members: ``brats-glioma-ensemble-v1 (brats-glioma-v1 + ...)``."""
        return " + ".join(p.id + (f" ({' + '.join(b.id for b in p.bundles)})" if p.ensemble else "")
                          for p in self.parts)

    def reused(self) -> "Models":
        """The same models for a later case: nothing is loaded again."""
        return dataclasses.replace(self, load_s=0.0)


ModelArg = Union[str, bundles.Bundle, Sequence[Union[str, bundles.Bundle]], Models]


def _load_part(model: Union[str, bundles.Bundle]) -> ModelPart:
    if isinstance(model, bundles.Bundle):
        return ModelPart(model.id, model.path, [model], False)
    folder = bundles.resolve(model)
    doc = bundles.describe(folder)
    ensemble = doc.get("format") == bundles.ENSEMBLE_FORMAT
    return ModelPart(str(doc.get("id")), folder, bundles.load_models(folder), ensemble,
                     doc.get("note") if ensemble else None)


def load_ensemble(model: ModelArg) -> Models:
    """Load one model or an ensemble (a list, or an ensemble's name or folder), timed; an
    ensemble's models must take the same inputs. :class:`Models` are returned as they are."""
    if isinstance(model, Models):
        return model
    t0 = time.perf_counter()
    items: List[Union[str, bundles.Bundle]] = list(model) if isinstance(model, (list, tuple)) else [model]  # type: ignore[list-item]
    models = Models(tuple(_load_part(m) for m in items))
    roles = models.members[0].manifest.in_sequences
    for m in models.members[1:]:
        if m.manifest.in_sequences != roles:
            raise InputError(m.path, "an ensemble's models must take the same sequences in the same order")
    return dataclasses.replace(models, load_s=time.perf_counter() - t0)


def _labels_on_reference(probs: np.ndarray, pre: Preprocessed, kind: str, scheme: str, post: PostprocessOptions,
                         uncertainty: bool) -> Tuple[sitk.Image, Optional[sitk.Image]]:
    """Labels (and the entropy map) on the reference input's grid. On the reference's own grid the
    labels are made there and moved back exactly; on a resampled working grid the probabilities
    go back (linearly) and the labels are made on the reference grid."""
    inv = pre.inverse
    if same_grid(inv.working, inv.canonical):
        labels = probabilities_to_labels(probs, kind, scheme)
        labels[~pre.brain] = 0
        out = inv.to_reference(postprocess(labels, scheme, post).astype(np.uint8), labels=True)
        return out, inv.to_reference(entropy_map(probs, kind), labels=False) if uncertainty else None
    ref_probs = np.stack([inv.to_reference_array(p, labels=False) for p in probs])
    labels = probabilities_to_labels(ref_probs, kind, scheme)
    labels[inv.to_reference_array(pre.brain.astype(np.uint8), labels=True) == 0] = 0
    out = sitk.GetImageFromArray(postprocess(labels, scheme, post).astype(np.uint8))
    out.CopyInformation(inv.reference)
    unc = None
    if uncertainty:
        unc = sitk.GetImageFromArray(entropy_map(ref_probs, kind))
        unc.CopyInformation(inv.reference)
    return out, unc


def _brain_mask_on_reference(pre: Preprocessed) -> sitk.Image:
    """HD-BET's mask when the input was stripped, else the brain the preprocessing found."""
    return pre.brain_mask if pre.brain_mask is not None else pre.inverse.to_reference(pre.brain.astype(np.uint8))


def _preprocess_for(inputs: Mapping[str, Union[str, sitk.Image, ArrayInput]], models: Models,
                    opts: SegmentOptions, dev: torch.device) -> Tuple[Preprocessed, List[str]]:
    """The inputs on the models' working grid (a T1 or T2 not given: an empty channel), and the input
    roles the models do not use."""
    first = models.members[0].manifest
    roles = first.in_sequences
    missing = [r for r in roles if inputs.get(r) is None and (r not in OPTIONAL_SEQUENCES or r == REFERENCE)]
    if missing:
        raise InputError(missing[0], f"the model {first.id} needs {sequences_needed(roles)}; no {', '.join(missing)} given")
    images = {r: _to_image(inputs[r], r) if inputs.get(r) is not None else None for r in roles}
    pre = preprocess(images, PreprocessOptions(
        reference=REFERENCE, isotropic=opts.isotropic, model_spacing=model_spacing(models.members),
        register=opts.register, skull_strip=opts.skull_strip, bias_field=opts.bias_field,
        device=str(dev) if dev.type == "cuda" else "cpu"), roles=roles)
    return pre, [r for r in inputs if inputs[r] is not None and r not in roles]


def segment(inputs: Mapping[str, Union[str, sitk.Image, ArrayInput]], model: ModelArg = bundles.DEFAULT_MODEL,
            device: Optional[str] = None, options: Optional[SegmentOptions] = None,
            progress: Optional[Progress] = None, cancel: Optional[threading.Event] = None) -> SegmentationResult:
    """Segment one case; returns labels on the reference input's grid and what was measured.

    Args:
        inputs: roles (t1, t1ce, t2, flair) to paths, SimpleITK images or ``(array, geometry)``.
        model: a bundle, an installed name or a folder (of a bundle or an ensemble), a list of
            them (an ensemble), or :class:`Models` loaded before (:func:`load_ensemble`).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; None: ``options.device``.
        options: TTA, overlap, uncertainty, label scheme, postprocessing, precision... (checked
            when made: :mod:`segment_options`).
        progress: called as ``progress(stage, fraction)`` while work proceeds.
        cancel: when set, work stops within one window and :class:`Cancelled` is raised.
    """
    opts = options or SegmentOptions()
    t0 = time.perf_counter()

    def check_cancel() -> None:
        if cancel is not None and cancel.is_set():
            raise Cancelled()

    dev = devices.resolve(device or opts.device)
    models = load_ensemble(model)
    # loaded here, or before and handed in: either way the loading counts once
    start = t0 - (models.load_s if isinstance(model, Models) else 0.0)
    timings: Dict[str, float] = {"load_model": models.load_s}
    first = models.members[0].manifest
    scheme = opts.label_scheme or first.label_scheme
    get_scheme(scheme)
    post = PostprocessOptions(**opts.postprocessing(first.postprocessing))
    if progress:
        progress("preprocess", 0.0)
    t = time.perf_counter()
    pre, extra = _preprocess_for(inputs, models, opts, dev)
    timings["preprocess"] = time.perf_counter() - t
    timings.update({k: v for k, v in pre.timings.items() if v >= 0.001})
    check_cancel()
    t = time.perf_counter()
    pred = predict_probabilities(pre.data, models.members, dev, opts, progress, cancel)
    timings["predict"] = time.perf_counter() - t
    check_cancel()
    t = time.perf_counter()
    if progress:
        progress("postprocess", 0.0)
    out, unc = _labels_on_reference(pred.probabilities, pre, first.output_kind, scheme, post, opts.uncertainty)
    timings["postprocess"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - start
    warnings = list(pre.warnings) + pred.notes
    if extra:
        warnings.append(f"ignored sequences the model does not use: {', '.join(extra)}")
    if progress:
        progress("done", 1.0)
    return _result(out, unc, pre, pred, models, opts, scheme, timings, warnings)


def _result(labels: sitk.Image, unc: Optional[sitk.Image], pre: Preprocessed, pred: Prediction, models: Models,
            opts: SegmentOptions, scheme: str, timings: Dict[str, float], warnings: List[str]) -> SegmentationResult:
    ref_img = pre.inverse.reference
    return SegmentationResult(
        labels=labels, label_scheme=scheme, timings=timings, device=pred.device, backend=pred.backend,
        volumes_ml=volumes(sitk.GetArrayViewFromImage(labels), scheme, voxel_volume_ml(ref_img)),
        model=models.name, ensembles=models.ensembles,
        models=[{"id": m.id, "version": m.manifest.version, "network": m.manifest.network,
                 "weights_sha256": m.manifest.weights_sha256, "demo": m.demo, "path": m.path} for m in models.members],
        uncertainty=unc, probabilities=pred.probabilities, warnings=warnings, preprocessing=pre.decisions,
        brain_mask=_brain_mask_on_reference(pre) if opts.brain_mask else None,
        input_geometry={"reference": REFERENCE, **geometry(ref_img),
                        "windows": tiles_cover(pre.data.shape[1:], models.members[0].manifest.patch_size, opts.overlap)})
