"""The settings of a training run."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

from ..networks import DEFAULT_NETWORK


@dataclass
class TrainConfig:
    network: str = DEFAULT_NETWORK
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
    clinical_augmentation: bool = False  # thick slices and tighter brain masks (data.vary_brain_mask, simulate_thick_slices)
    device: str = "auto"
    gradient_checkpointing: bool = False
    freeze_encoder: bool = False
    replay_fraction: float = 0.0  # share of samples drawn from the replay cases (fine-tuning)
    select_best: bool = True  # export the best validation epoch; False: the last (cross-validation folds, whose
    #                           validation cases are the held-out fold and must not choose the weights);
    #                           a run that averages its weights (average_from) exports the average either way
    spacing: Optional[float] = None  # isotropic working spacing in mm (None: the reference grid's own)
    case_weights: Dict[str, float] = field(default_factory=dict)  # relative sampling weight by case id (others 1),
    #                                                                so that rare kinds of tumor are seen more often
    # WT, TC, ET weights of a region-based loss (None: the network's own); only for networks that declare
    # ``region_weights``
    region_weights: Optional[Tuple[float, float, float]] = None
    # share of each region's voxels whose cross-entropy counts, the hardest (nnU-Net's TopK loss; None:
    # all); only for networks that declare ``hardest_voxels``
    hardest_voxels: Optional[float] = None
    # the Dice term over the whole batch (nnU-Net's batch Dice); only for networks that declare ``batch_dice``
    batch_dice: bool = False
    # the weight (0-1) of missed voxels in a region-based loss's overlap term, 1 minus it that of false
    # ones (the Tversky index; None: the network's own, 0.5 the Dice); only for networks that declare
    # ``missed_weight``
    missed_weight: Optional[float] = None
    augmentation: str = "standard"  # a set of training.augmentation.AUGMENTATIONS
    without_enhancement: float = 0.0  # share of patches with enhancing tumor shown without it (augmentation.remove_enhancement)
    fluid_cores: float = 0.0  # share of patches whose tumor core is shown filled with fluid (augmentation.fill_with_fluid)
    # share of those shown without enhancement as well (a cyst whose wall does not enhance); at least without_enhancement
    fluid_without_enhancement: float = 0.0
    # share of patches whose tumor core is shown as a solid core that does not enhance (augmentation.make_core_solid)
    solid_cores: float = 0.0
    # share of patches with a donor case's tumor carved into them at the same place (augmentation.carve_tumor,
    # CarveMix); the donors are the training cases named in carve_from (empty: every training case)
    carved_tumors: float = 0.0
    carve_from: Tuple[str, ...] = ()
    schedule: Optional[str] = None  # the learning-rate schedule ("cosine", "step", "constant"; None: the network's)
    # stochastic weight averaging (Izmailov et al., UAI 2018, arXiv:1803.05407): from this epoch on
    # (1-based), the weights at each epoch's end are averaged, and the average is what the run exports
    average_from: Optional[int] = None
