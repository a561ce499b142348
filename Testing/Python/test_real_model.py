"""The shipped default model on real MRI it never trained on (slow: run by CI's slow step).

The sample case in ``Resources/Samples`` is one of the real-data recipe's validation cases. This
guards against regressions of the default model and of the ``segment`` path; it is not a tuning
target (thresholds well under the model's measured figures)."""
import os

import pytest

from BrainTumorSegLib import bundles
from BrainTumorSegLib.cases import find_case
from BrainTumorSegLib.evaluation import score_against
from BrainTumorSegLib.inference import segment
from BrainTumorSegLib.real_recipe import SAMPLE_CASE, VALIDATION

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLE = os.path.join(ROOT, "Resources", "Samples", SAMPLE_CASE)


@pytest.mark.slow
def test_default_model_on_a_real_validation_case():
    assert SAMPLE_CASE in VALIDATION
    for member in bundles.load_models(bundles.DEFAULT_MODEL):
        data = member.manifest.to_json()["training_data"]
        assert not member.demo and SAMPLE_CASE in data["validation"] and SAMPLE_CASE not in data["train"]
    case = find_case(SAMPLE)
    res = segment(case.sequences, bundles.DEFAULT_MODEL, "cpu")
    assert len(res.models) == 2
    m = score_against(res.labels, case.paths["seg"], res.label_scheme)
    assert m["WT"]["dice"] >= 0.85, m["WT"]
    assert m["TC"]["dice"] >= 0.70, m["TC"]
