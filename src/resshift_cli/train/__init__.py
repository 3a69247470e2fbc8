"""Training ResShift: the objective (Eq. 8), training pairs, and the loop (EMA, accumulation, checkpoints,
DDP under torchrun)."""

from __future__ import annotations

from resshift_cli.train.data import PairOptions, TrainPairs, scan
from resshift_cli.train.loop import TrainEvent, TrainOptions, fit, resume_model
from resshift_cli.train.objective import LossTerms, diffusion_loss
from resshift_cli.train.validate import ValidationSet

__all__ = [
    "LossTerms",
    "PairOptions",
    "TrainEvent",
    "TrainOptions",
    "TrainPairs",
    "ValidationSet",
    "diffusion_loss",
    "fit",
    "resume_model",
    "scan",
]
