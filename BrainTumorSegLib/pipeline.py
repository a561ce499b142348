"""The pipeline: ``segment`` turns the sequences of a case into tumor labels on the T1ce grid.

One call runs the stages in order, each in its own sub-package: ``preprocess`` (common grid,
canonical orientation, brain crop, z-score), ``predict`` (sliding-window prediction with Gaussian
weighting, optional mirror test-time augmentation, ensembles averaged), ``postprocess`` (labels
from probabilities, clean-up, the inverse transform onto the reference input's grid). The label
scheme and the output kind are resolved once here and passed down. Nothing is written here; the
caller writes the returned images (``write``, atomically).
"""
from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
import SimpleITK as sitk
import torch

from .errors import Cancelled, InputError
from .labels import get_scheme
from .models import bundles
from .models.ensembles import ModelArg, Models, load_ensemble, model_spacing
from .postprocess import reliability
from .postprocess.cleanup import PostprocessOptions
from .postprocess.on_reference import brain_mask_on_reference, labels_on_reference
from .postprocess.volumes import volumes
from .predict import devices
from .predict.predictor import Prediction, predict_probabilities
from .predict.sliding_window import tiles_cover
from .preprocess.transform import Preprocessed, PreprocessOptions, preprocess
from .progress import Progress
from .read.cases import OPTIONAL_SEQUENCES, REFERENCE, SEQUENCES, sequences_needed, without_condition
from .read.images import geometry, voxel_volume_ml
from .segment_options import SegmentOptions  # declared once there; the API's name stays here

ArrayInput = Tuple[np.ndarray, Dict]      # (array z, y, x; {"spacing", "origin", "direction"})


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
        if len(value) != 2 or not isinstance(value[1], Mapping):
            raise InputError(role, "an (array, geometry) pair is expected, the geometry a dict of spacing, origin "
                                   "and direction")
        arr, geo = np.asarray(value[0]), value[1]
        if arr.ndim != 3:
            raise InputError(role, f"array of {arr.ndim} dimensions; a 3D (z, y, x) array is expected")
        if arr.dtype.kind not in "iuf":
            raise InputError(role, f"array of {arr.dtype} values; numbers are expected")
        img = sitk.GetImageFromArray(arr.astype(np.float32))
        try:
            spacing = [float(v) for v in geo.get("spacing", (1, 1, 1))]
            if len(spacing) != 3 or not all(0 < v < float("inf") for v in spacing):
                raise ValueError
            img.SetSpacing(spacing)
            img.SetOrigin([float(v) for v in geo.get("origin", (0, 0, 0))])
            if "direction" in geo:
                img.SetDirection([float(v) for v in geo["direction"]])
        except (TypeError, ValueError, RuntimeError):
            raise InputError(role, "geometry: spacing takes 3 positive numbers (mm), origin 3 numbers, direction 9 "
                                   "(a rotation)") from None
        return img
    return value


def _preprocess_for(inputs: Mapping[str, Union[str, sitk.Image, ArrayInput]], models: Models,
                    opts: SegmentOptions, dev: torch.device) -> Tuple[Preprocessed, List[str]]:
    """The inputs on the models' working grid (a T1 or T2 not given: an empty channel), and the input
    roles the models do not use."""
    first = models.members[0].manifest
    roles = first.in_sequences
    unknown = [r for r in inputs if r not in SEQUENCES]
    if unknown:  # a typo (T2) would leave an optional sequence out, with a warning only
        raise InputError(unknown[0], f"is not a sequence's role; the roles are {', '.join(SEQUENCES)}")
    missing = [r for r in roles if inputs.get(r) is None and (r not in OPTIONAL_SEQUENCES or r == REFERENCE)]
    if missing:
        raise InputError(missing[0], f"the model {first.id} needs {sequences_needed(roles)}; no {', '.join(missing)} given")
    images = {r: _to_image(inputs[r], r) if inputs.get(r) is not None else None for r in roles}
    pre = preprocess(images, PreprocessOptions(
        reference=REFERENCE, isotropic=opts.isotropic, model_spacing=model_spacing(models.members),
        register=opts.register, skull_strip=opts.skull_strip, bias_field=opts.bias_field,
        crop_multiple=max(m.network.crop_multiple for m in models.members),
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
    post = PostprocessOptions(**opts.postprocessing(models.postprocessing))
    opts = dataclasses.replace(opts, window=_window(opts, models))
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
    out, unc = labels_on_reference(pred.probabilities, pre, first.output_kind, scheme, post, opts.uncertainty)
    measured = volumes(sitk.GetArrayViewFromImage(out), scheme, voxel_volume_ml(pre.inverse.reference))
    timings["postprocess"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - start
    warnings = list(pre.warnings) + pred.notes
    if extra:
        warnings.append(f"ignored sequences the model does not use: {', '.join(extra)}")
    whose = models.name + (f" ({models.held_out_by})" if models.held_out_by else "")
    warnings += [reliability.without_warning(role, whose, models.without)
                 for role in pre.decisions["sequences_missing"] if without_condition(role) in models.without]
    pattern = reliability.warning(measured, whose, models.held_out)
    if pattern:
        warnings.append(pattern)
    if progress:
        progress("done", 1.0)
    return _result(out, unc, pre, pred, models, opts, scheme, measured, timings, warnings)


def _window(opts: SegmentOptions, models: Models) -> str:
    """``patch`` or ``whole``: as asked, else the model's own (OpenVINO runs windows of one fixed shape)."""
    if opts.window != "auto":
        return opts.window
    return "patch" if opts.backend == "openvino" else models.window


def _result(labels: sitk.Image, unc: Optional[sitk.Image], pre: Preprocessed, pred: Prediction, models: Models,
            opts: SegmentOptions, scheme: str, measured: Dict[str, float], timings: Dict[str, float],
            warnings: List[str]) -> SegmentationResult:
    ref_img = pre.inverse.reference
    return SegmentationResult(
        labels=labels, label_scheme=scheme, timings=timings, device=pred.device, backend=pred.backend,
        volumes_ml=measured, warnings=warnings,
        model=models.name, ensembles=models.ensembles,
        models=[{"id": m.id, "version": m.manifest.version, "network": m.manifest.network,
                 "weights_sha256": m.manifest.weights_sha256, "demo": m.demo, "path": m.path} for m in models.members],
        uncertainty=unc, probabilities=pred.probabilities, preprocessing=pre.decisions,
        brain_mask=brain_mask_on_reference(pre) if opts.brain_mask else None,
        input_geometry={"reference": REFERENCE, **geometry(ref_img),
                        "window": opts.window, "windows": 1 if opts.window == "whole" else
                        tiles_cover(pre.data.shape[1:], models.members[0].manifest.patch_size, opts.overlap)})
