"""The QC picture of one result: a PNG a person can check at a glance.

Axial, coronal and sagittal slices through the tumor's centre (the brain's, when there is no
tumor) of the T1ce and the FLAIR, the labels overlaid in the Slicer module's colours, a legend
with the volumes in mL, the model, and a "research use, not a medical device" line; the
uncertainty map as an extra row when there is one. Slices are shown in radiological convention
(patient's right on the left) with their physical aspect ratio, whatever the voxel spacing. Drawn
with matplotlib's Agg canvas (the ``qc`` extra), never through pyplot, so no window and no global
backend; the caller writes the returned bytes atomically.
"""
from __future__ import annotations

import io
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from .. import __version__, extras
from ..labels import get_scheme
from . import terminology

OVERLAY_ALPHA = 0.45
_BACKGROUND = "black"
# (name, array axis held fixed in z, y, x order of an LPS volume, left / right / top markers)
_VIEWS = (("axial", 0, "RLA"), ("coronal", 1, "RLS"), ("sagittal", 2, "APS"))


def _lps(img: sitk.Image) -> Tuple[np.ndarray, Tuple[float, float, float]]:
    """(z, y, x) array with x towards the patient's left, y posterior, z superior, and its spacing (x, y, z)."""
    oriented = sitk.DICOMOrient(img, "LPS")
    return sitk.GetArrayFromImage(oriented), oriented.GetSpacing()


def _crop(volumes: List[np.ndarray], inside: np.ndarray, margin: int = 4) -> List[np.ndarray]:
    """The volumes cut to the box of ``inside`` (the brain) and a margin, so the brain fills the panels."""
    if not inside.any():
        return volumes
    box = tuple(slice(max(int(i.min()) - margin, 0), int(i.max()) + margin + 1) for i in np.nonzero(inside))
    return [v[box] for v in volumes]


def _centre(labels: np.ndarray, brain: np.ndarray) -> Tuple[int, int, int]:
    """Index (z, y, x) of the tumor's centre of mass, else the brain's, else the volume's."""
    for mask in (labels > 0, brain > 0):
        if mask.any():
            return tuple(int(round(float(c.mean()))) for c in np.nonzero(mask))  # type: ignore[return-value]
    return tuple(n // 2 for n in labels.shape)  # type: ignore[return-value]


def _plane(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """The slice shown: rows downwards = anterior to posterior (axial) or superior to inferior."""
    plane = np.take(volume, index, axis=axis)
    return plane if axis == 0 else plane[::-1]


def _aspect(axis: int, spacing: Tuple[float, float, float]) -> float:
    """Height of a pixel over its width, in mm: rows and columns of :func:`_plane`."""
    sx, sy, sz = spacing
    return {0: sy / sx, 1: sz / sx, 2: sz / sy}[axis]


def _grey(volume: np.ndarray) -> np.ndarray:
    """0..1 with a window from the 1st to the 99.5th percentile of the nonzero voxels."""
    inside = volume[volume != 0]
    if inside.size == 0:
        return np.zeros(volume.shape, np.float32)
    lo, hi = np.percentile(inside, [1.0, 99.5])
    return np.clip((volume - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0).astype(np.float32)


def blend(grey: np.ndarray, labels: np.ndarray, scheme: str) -> np.ndarray:
    """RGB (0..1) of a grey slice with each label's colour laid over it at :data:`OVERLAY_ALPHA`."""
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    s = get_scheme(scheme)
    for seg in terminology.SEGMENTS:
        where = labels == s.class_value(seg.key)
        rgb[where] = (1 - OVERLAY_ALPHA) * rgb[where] + OVERLAY_ALPHA * np.array(seg.colour)
    return rgb


def _draw_row(axes, title: str, volume: np.ndarray, spacing, centre, overlay=None, scheme: str = "brats2021",
              cmap: Optional[str] = None) -> None:
    for ax, (view, axis, marks) in zip(axes, _VIEWS):
        plane = _plane(volume, axis, centre[axis])
        if cmap:
            ax.imshow(plane, cmap=cmap, vmin=0.0, vmax=1.0, aspect=_aspect(axis, spacing), interpolation="nearest")
        else:
            shown = blend(plane, _plane(overlay, axis, centre[axis]), scheme) if overlay is not None else plane
            ax.imshow(shown, cmap="gray", vmin=0.0, vmax=1.0, aspect=_aspect(axis, spacing), interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(f"{title}, {view}", color="white", fontsize=9)
        for (x, y), text in zip(((0.01, 0.5), (0.99, 0.5), (0.5, 0.98)), marks):
            ax.text(x, y, text, transform=ax.transAxes, color="white", fontsize=8, ha="center", va="center")


def render(case_id: str, t1ce: sitk.Image, flair: sitk.Image, labels: sitk.Image, scheme: str,
           volumes_ml: Mapping[str, float], model: str, uncertainty: Optional[sitk.Image] = None) -> bytes:
    """The QC picture as PNG bytes.

    Args:
        case_id: shown as the title.
        t1ce: the T1ce; ``labels`` (and ``uncertainty``) lie on its grid.
        flair: the FLAIR, on any grid (resampled onto the T1ce's in physical space).
        labels: the result, in ``scheme``.
        volumes_ml: NCR, ED, ET, TC and WT in mL.
        model: the model's name as the report gives it.
        uncertainty: the 0..1 uncertainty map, shown as an extra row when given.
    """
    extras.require("qc")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    lab, spacing = _lps(labels)
    t1 = _lps(t1ce)[0]
    fl = _lps(sitk.Resample(flair, t1ce, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32))[0]
    unc = _lps(uncertainty)[0] if uncertainty is not None else np.zeros_like(t1)
    lab, t1, fl, unc = _crop([lab, t1, fl, unc], (t1 != 0) | (lab > 0))
    centre = _centre(lab, t1)
    rows: List[Dict] = [{"title": "T1ce", "volume": _grey(t1), "overlay": lab},
                        {"title": "FLAIR", "volume": _grey(fl), "overlay": lab}]
    if uncertainty is not None:
        rows.append({"title": "uncertainty (0 to 1)", "volume": unc, "cmap": "inferno"})
    fig = Figure(figsize=(10.5, 3.2 * len(rows) + 1.4), dpi=100, facecolor=_BACKGROUND)
    FigureCanvasAgg(fig)
    grid = fig.subplots(len(rows), 3, squeeze=False)
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - 0.75 / fig.get_figheight(), bottom=0.7 / fig.get_figheight(),
                        wspace=0.04, hspace=0.12)
    for axes, row in zip(grid, rows):
        _draw_row(axes, row["title"], row["volume"], spacing, centre, row.get("overlay"), scheme, row.get("cmap"))
    fig.suptitle(f"{case_id}    model {model}", color="white", fontsize=12)
    handles = [Patch(color=seg.colour, label=f"{seg.title} ({seg.key}): {volumes_ml.get(seg.key, 0.0):.1f} mL")
               for seg in terminology.SEGMENTS]
    fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False, labelcolor="white", fontsize=9,
               bbox_to_anchor=(0.5, 0.35 / fig.get_figheight()))
    fig.text(0.5, 0.2 / fig.get_figheight(),
             f"WT {volumes_ml.get('WT', 0.0):.1f} mL   TC {volumes_ml.get('TC', 0.0):.1f} mL   "
             f"ET {volumes_ml.get('ET', 0.0):.1f} mL      Research use only, not a medical device "
             f"(braintumorseg {__version__})", color="white", fontsize=9, ha="center", va="center")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", facecolor=_BACKGROUND)
    return buffer.getvalue()
