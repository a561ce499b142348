"""Fine-tuning a model bundle on new cases (for example corrected in Slicer)."""
from __future__ import annotations

from dataclasses import replace
from typing import Optional, Sequence, Union

from ..models import bundles
from ..read.cases import Case
from .config import TrainConfig
from .loop import train

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
    given = cfg or TrainConfig()
    trained = (m.document.get("training") or {}).get("config", {})
    patch = given.patch or trained.get("patch") or m.patch_size
    cfg = replace(given, network=m.network, options=dict(m.options), label_scheme=m.label_scheme,
                  lr=given.lr or b.network.training_defaults.lr * FINETUNE_LR_FACTOR,
                  patch=(int(patch[0]), int(patch[1]), int(patch[2])),
                  # the working spacing the bundle was trained at (its manifest says so)
                  spacing=m.spacing_mm,
                  replay_fraction=given.replay_fraction or (0.3 if replay_cases else 0.0))
    extra = {"finetuned_from": {"id": m.id, "weights_sha256": m.weights_sha256},
             "description": f"Fine-tuned from {m.id} on {len(train_cases)} case(s)"
                            + (f" with {len(replay_cases)} replayed" if replay_cases else "")
                            + ". Not validated for clinical use.",
             "clinical_use": False, "patch_size": list(m.patch_size)}
    return train(cfg, train_cases, val_cases, out_dir, resume=resume, init_from=b, bundle_manifest=extra,
                 log=log, replay_cases=replay_cases)
