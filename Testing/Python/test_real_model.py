"""The shipped default model on real MRI (slow: run by CI's slow step).

The sample case in ``Resources/Samples`` is among the default's training cases (it trained on all
32) and held out by one of the five shipped fold models of the 2 mm design (the default's stage 1 is
that design trained on all 32; the default's own fold cascades are not shipped). This
guards against regressions of the models and of the ``segment`` path; it is not a tuning target
(thresholds well under the measured figures)."""
import os

import pytest

from BrainTumorSegLib.evaluation.scoring import score_against
from BrainTumorSegLib.models import bundles
from BrainTumorSegLib.pipeline import segment
from BrainTumorSegLib.read.cases import find_case
from BrainTumorSegLib.recipes.brats_glioma import SAMPLE_CASE

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLE = os.path.join(ROOT, "Resources", "Samples", SAMPLE_CASE)


@pytest.mark.slow
def test_default_model_and_the_shipped_fold_model_that_held_out_the_sample():
    default = bundles.load(bundles.DEFAULT_MODEL)
    folds = [bundles.load(f) for f in bundles.load("brats-glioma-v9-all").manifest.document["all_folds"]["design_folds"]]
    held_out = [m for m in folds if SAMPLE_CASE not in m.manifest.training_cases]
    assert len(held_out) == 1 and SAMPLE_CASE in default.manifest.training_cases and not default.demo
    assert SAMPLE_CASE in held_out[0].manifest.document["training_data"]["validation"]
    case = find_case(SAMPLE)
    for model in (held_out[0], default):
        res = segment(case.sequences, model, "cpu")
        assert [m["id"] for m in res.models] == [model.id]
        m = score_against(res.labels, case.paths["seg"], res.label_scheme)
        assert m["WT"]["dice"] >= 0.85, (model.id, m["WT"])
        assert m["TC"]["dice"] >= 0.70, (model.id, m["TC"])


@pytest.mark.slow
def test_default_model_does_not_depend_on_the_brats_grid(tmp_path):
    """The sample case moved onto another grid and field of view (182 x 218 x 182 at 1 mm, the MNI
    template's, shifted, and 1.2 mm anisotropic): labels brought back onto the original grid agree
    with those of the original case up to interpolation."""
    import numpy as np
    import SimpleITK as sitk

    from BrainTumorSegLib.evaluation.metrics import dice

    case = find_case(SAMPLE)
    ref = segment(case.sequences, bundles.DEFAULT_MODEL, "cpu")
    original = sitk.GetArrayFromImage(ref.labels)
    t1ce = sitk.ReadImage(case.paths["t1ce"])
    for size, spacing, shift in (((182, 218, 182), (1.0, 1.0, 1.0), (-9.0, 14.0, 6.0)),
                                 ((200, 200, 128), (1.2, 1.2, 1.2), (3.0, -5.0, 0.0))):
        grid = sitk.Image(list(size), sitk.sitkFloat32)
        grid.SetSpacing(spacing)
        centre = np.array(t1ce.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in t1ce.GetSize()]))
        grid.SetOrigin((centre - np.array(spacing) * (np.array(size) - 1) / 2 + np.array(shift)).tolist())
        moved = {}
        for role, path in case.sequences.items():
            out = str(tmp_path / f"{role}_{size[0]}.nii.gz")
            sitk.WriteImage(sitk.Resample(sitk.ReadImage(path), grid, sitk.Transform(), sitk.sitkLinear, 0.0), out)
            moved[role] = out
        res = segment(moved, bundles.DEFAULT_MODEL, "cpu")
        back = sitk.GetArrayFromImage(sitk.Resample(res.labels, t1ce, sitk.Transform(), sitk.sitkNearestNeighbor, 0))
        for name, values in (("WT", (1, 2, 4)), ("TC", (1, 4)), ("ET", (4,))):
            d = dice(np.isin(back, values), np.isin(original, values))
            assert d >= 0.9, (size, name, d)
