"""Two-stage training of NPHM / NPM: identity (stage 1), then expressions (stage 2).

``nphm.training.stage1.train(cfg, exp_dir, ...)`` and ``nphm.training.stage2.train(cfg, exp_dir,
mode, ...)`` train or resume an experiment in the release's layout
(``exp_dir/configs.yaml``, ``exp_dir/checkpoints/checkpoint_epoch_{N}.tar``), readable by
:func:`nphm.checkpoints.load_identity` / :func:`nphm.checkpoints.load_expression`.
"""
from nphm.training.config import (
    CommonTrainingSettings,
    ExpressionTrainingSettings,
    IdentityTrainingSettings,
    lr_at,
)
from nphm.training.data import DeformationDataset, IdentityDataset, epoch_batches, iterate_epoch, shard
from nphm.training.losses import deformation_losses, identity_losses
from nphm.training.trainer import AutoDecoderTrainer

__all__ = [
    "AutoDecoderTrainer",
    "CommonTrainingSettings",
    "DeformationDataset",
    "ExpressionTrainingSettings",
    "IdentityDataset",
    "IdentityTrainingSettings",
    "deformation_losses",
    "epoch_batches",
    "identity_losses",
    "iterate_epoch",
    "lr_at",
    "shard",
]
