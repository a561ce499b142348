"""Weight averaging of model bundles ("model soups").

Networks fine-tuned from one starting point can be averaged weight by weight into one network
that costs no more at inference than each of them (Wortsman et al., "Model soups: averaging weights
of multiple fine-tuned models improves accuracy without increasing inference time", ICML 2022,
arXiv:2203.05482, section 3, the uniform soup). Here: a base bundle's weights, or those of one of
its parts (a sub-network, e.g. a cascade's ``coarse`` stage), averaged with the whole networks of
other bundles that share its layers and were trained on the same cases (so that a fold model's
average stays out of fold).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence

import torch

from ..errors import InputError
from .bundles import Bundle

if TYPE_CHECKING:
    from ..networks import SegmentationNetwork

SOUPS = ("Wortsman M, Ilharco G, Gadre SY, et al. Model soups: averaging weights of multiple fine-tuned "
         "models improves accuracy without increasing inference time. ICML 2022. arXiv:2203.05482")


def averaged_network(base: Bundle, others: Sequence[Bundle], part: Optional[str] = None) -> "SegmentationNetwork":
    """``base``'s network with its weights (or those of its sub-network ``part``) replaced by the
    mean of theirs and the ``others``' whole networks; integer buffers stay the base's."""
    target = base.network if part is None else getattr(base.network, part, None)
    if not isinstance(target, torch.nn.Module):
        raise InputError(base.path, f"has no part {part!r} (network {base.manifest.network})")
    own = target.state_dict()
    states = [own]
    where = base.id + (f"'s {part}" if part else "")
    for other in others:
        state = other.network.state_dict()
        if state.keys() != own.keys() or any(state[k].shape != own[k].shape for k in own):
            raise InputError(other.path, f"does not fit {where}: other layers or shapes")
        if other.manifest.training_cases != base.manifest.training_cases:
            raise InputError(other.path, f"was trained on other cases than {base.id}: their average would be "
                                         "held out from neither")
        states.append(state)
    target.load_state_dict({k: torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype)
                            if v.is_floating_point() else v for k, v in own.items()})
    return base.network


def averaged_manifest(base: Bundle, others: Sequence[Bundle], model_id: str, part: Optional[str] = None,
                      description: Optional[str] = None) -> Dict[str, Any]:
    """The base's manifest for the average: a new id, what was averaged, and no figures (they
    described the base's weights, as did where they came from)."""
    stale = ("metrics", "design_figures_from", "converted_from", "weights_storage")
    doc = {k: v for k, v in base.manifest.to_json().items() if k not in stale}
    doc["id"] = model_id
    doc["averaged"] = {"base": {"id": base.id, "weights_sha256": base.manifest.weights_sha256},
                       "part": part, "with": [{"id": o.id, "weights_sha256": o.manifest.weights_sha256} for o in others],
                       "method": "uniform mean of every floating-point tensor", "citation": SOUPS}
    if description:
        doc["description"] = description
    return doc
