"""The auto-decoder training loop shared by both stages.

A *task* (:class:`nphm.training.stage1.IdentityTask`, :class:`nphm.training.stage2.ExpressionTask`)
provides the network, the datasets and the losses; :class:`AutoDecoderTrainer` owns the
latent tables, optimisers, learning-rate schedules, the epoch loop, validation latents,
checkpoints (release layout, written atomically), exact resuming, logs and previews.

Per epoch (release semantics): learning rates from the step schedules; one pass over the
training items in batches (network: AdamW, latents: SparseAdam, gradient-norm clipping on
both); every ``val_interval`` epochs one pass over the validation items that optimises only
the validation latents (network in eval mode, not updated); a checkpoint
``checkpoint_epoch_{epoch}.tar`` every ``ckpt_interval`` epochs (and after the last epoch),
with preview meshes. A checkpoint of epoch ``N`` holds the state after epoch ``N``; resuming
continues with epoch ``N + 1`` and gives the same parameters as an uninterrupted run.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Protocol, Sequence

import torch
from torch import nn
from tqdm import tqdm

from nphm.checkpoints import (
    available_epochs, load_state_dict_checked, newest_readable_checkpoint, read_checkpoint, save_checkpoint,
)
from nphm.training.config import CommonTrainingSettings, lr_at
from nphm.training.data import iterate_epoch
from nphm.training.distributed import DistInfo, all_reduce_gradients, all_reduce_sum, barrier, broadcast_module
from nphm.training.latents import LatentTable
from nphm.training.losses import weighted_total
from nphm.training.state import capture_rng, restore_rng
from nphm.training.tracking import LossCSV, WandbLogger
from nphm.utils.io import PathLike, remove_stale_temporaries

#: Version of the extra checkpoint entries written by this trainer.
TRAINER_STATE_VERSION = 1


class TrainingTask(Protocol):
    """What a stage provides to the trainer."""

    name: str
    network: nn.Module
    train_set: Any
    val_set: Any
    latent_dim: int
    loss_keys: Sequence[str]

    def losses(self, batch: Dict[str, torch.Tensor], z: torch.Tensor, split: str) -> Dict[str, torch.Tensor]:
        """Per-item losses (B,) of a batch for latents ``z`` (B, latent_dim)."""

    def preview(self, epoch: int, out_dir: Path, latents: Dict[str, torch.Tensor]) -> Optional[Path]:
        """Write preview meshes / a PNG for ``latents`` {"train", "val"}; return the PNG path."""

    def checkpoint_extra(self) -> Dict[str, Any]:
        """Extra checkpoint entries (e.g. subject lists)."""


def batch_to_device(batch: Mapping[str, torch.Tensor], device: torch.device) -> Dict[str, torch.Tensor]:
    out = {}
    for k, v in batch.items():
        v = torch.as_tensor(v)
        out[k] = v.to(device, dtype=torch.float32 if v.is_floating_point() else torch.long, non_blocking=True)
    return out


class AutoDecoderTrainer:
    """Trains ``task.network`` and one latent per training item.

    Args:
        task: the stage.
        settings: the stage's training settings (:mod:`nphm.training.config`).
        exp_dir: experiment folder (``configs.yaml`` is written by the caller).
        device: torch device of this process.
        dist_info: data-parallel setup (:func:`nphm.training.distributed.init_distributed`).
        wandb_mode: ``disabled``, ``offline`` or ``online``.
        project: wandb project name.
        config: the full config (logged to wandb).
        progress: show the tqdm bar (main process only).
    """

    def __init__(
        self,
        task: TrainingTask,
        settings: CommonTrainingSettings,
        exp_dir: PathLike,
        device: torch.device,
        dist_info: DistInfo = DistInfo(),
        wandb_mode: str = "offline",
        project: str = "nphm",
        config: Optional[Mapping[str, Any]] = None,
        progress: bool = True,
    ) -> None:
        self.task = task
        self.s = settings
        self.exp_dir = Path(exp_dir)
        self.device = device
        self.dist = dist_info
        self.progress = progress and dist_info.is_main
        self.network = task.network.to(device)
        D = task.latent_dim
        init_std = self.s.latent_init_std(D)
        self.latents = LatentTable(len(task.train_set), D, init_std, self.s.lr_lat, device)
        self.latents_val = LatentTable(len(task.val_set), D, init_std, self.s.lr_lat, device)
        self.optimizer = torch.optim.AdamW(self.network.parameters(), lr=float(self.s.lr),
                                           weight_decay=float(self.s.weight_decay))
        self.lambdas = {k: float(v) for k, v in self.s.lambdas.items()}
        missing = [k for k in task.loss_keys if k not in self.lambdas]
        if missing:
            raise KeyError(f"training.lambdas has no weight for loss(es) {missing}")
        self.start_epoch = 0
        self.config = dict(config or {})
        self.wandb_mode = wandb_mode
        self.project = project

    # ------------------------------------------------------------------ schedules
    def set_learning_rates(self, epoch: int) -> Dict[str, float]:
        s = self.s
        lr = lr_at(epoch, s.lr, s.lr_decay_factor, s.lr_decay_interval)
        lr_lat = lr_at(epoch, s.lr_lat, s.lr_decay_factor_lat, s.lr_decay_interval_lat, s.lr_decay_start_lat)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.latents.set_lr(lr_lat)
        self.latents_val.set_lr(lr_lat)
        return {"lr": lr, "lr_lat": lr_lat}

    # ------------------------------------------------------------------ checkpoints
    def save(self, epoch: int) -> Path:
        extra = {
            "trainer_state_version": TRAINER_STATE_VERSION,
            "rng": capture_rng(),
            "schedule": {"epoch": epoch, "next_epoch": epoch + 1, **{k: getattr(self.s, k) for k in (
                "lr", "lr_lat", "lr_decay_factor", "lr_decay_factor_lat", "lr_decay_interval",
                "lr_decay_interval_lat", "lr_decay_start_lat")}},
            "world_size": self.dist.world_size,
        }
        extra.update(self.task.checkpoint_extra())
        return save_checkpoint(self.exp_dir, epoch, self.network, self.latents.embedding, self.latents_val.embedding,
                               self.optimizer, self.latents.optimizer, self.latents_val.optimizer, extra=extra)

    def resume(self) -> int:
        """Load the newest checkpoint (or ``training.ckpt``) of the experiment, if any.

        A newest checkpoint that cannot be read (truncated) is passed over with a warning for the
        newest readable one; temporary files of killed checkpoint writers are removed first.

        Returns:
            The first epoch still to train (0 without checkpoints).
        """
        if self.dist.is_main:
            for path in remove_stale_temporaries(self.exp_dir):
                tqdm.write(f"removed the temporary file of a killed writer: {path}")
        barrier(self.dist)
        if not available_epochs(self.exp_dir):
            return 0
        if self.s.ckpt is not None:
            epoch, ckpt = self.s.ckpt, read_checkpoint(self.exp_dir, self.s.ckpt)
        else:
            warn = tqdm.write if self.dist.is_main else (lambda message: None)
            epoch, ckpt = newest_readable_checkpoint(self.exp_dir, lambda m: warn(f"warning: {m}"))
        source = f"{self.exp_dir}/checkpoints/checkpoint_epoch_{epoch}.tar"
        load_state_dict_checked(self.network, ckpt["decoder_state_dict"], source)
        for table, key, opt_key in ((self.latents, "latent_codes_state_dict", "optimizer_lat_state_dict"),
                                    (self.latents_val, "latent_codes_val_state_dict", "optimizer_lat_val_state_dict")):
            weight = ckpt[key]["weight"] if ckpt.get(key) is not None else None
            if weight is None or tuple(weight.shape) != tuple(table.weight.shape):
                got = None if weight is None else tuple(weight.shape)
                raise ValueError(f"{source}: {key} has shape {got}, the dataset needs {tuple(table.weight.shape)} "
                                 "(did the subjects or expressions change since the checkpoint?)")
            with torch.no_grad():
                table.weight.copy_(weight.to(self.device))
            if ckpt.get(opt_key) is not None:
                table.optimizer.load_state_dict(ckpt[opt_key])
        if ckpt.get("optimizer_encoder_state_dict") is not None:
            self.optimizer.load_state_dict(ckpt["optimizer_encoder_state_dict"])
        if "rng" in ckpt:
            restore_rng(ckpt["rng"])
        elif self.dist.is_main:
            tqdm.write(f"note: {source} has no random-generator states; the continuation is not bit-exact")
        self.start_epoch = int(ckpt["epoch"]) + 1
        return self.start_epoch

    # ------------------------------------------------------------------ one pass
    def _pass(self, epoch: int, split: str) -> Dict[str, float]:
        """One pass over the training (``split="train"``) or validation items."""
        train = split == "train"
        dataset = self.task.train_set if train else self.task.val_set
        table = self.latents if train else self.latents_val
        keys = ["loss"] + list(self.task.loss_keys)
        sums = torch.zeros(len(keys), dtype=torch.float64)
        n_batches = 0
        self.network.train(train)
        batches = iterate_epoch(dataset, self.s.batch_size, epoch, self.s.seed + (0 if train else 1),
                                self.dist.rank, self.dist.world_size,
                                num_workers=self.s.num_workers, pin_memory=self.device.type == "cuda",
                                shuffle=True)
        for global_batch, _, batch in batches:
            if train:
                self.optimizer.zero_grad(set_to_none=True)
            table.zero_grad()
            global_rows = torch.as_tensor(global_batch, dtype=torch.long, device=self.device)
            values = torch.zeros(len(keys), dtype=torch.float64, device=self.device)
            if batch is not None:
                batch = batch_to_device(batch, self.device)
                z = table.lookup(batch["idx"], global_rows)
                losses = self.task.losses(batch, z, split)
                total = weighted_total(losses, self.lambdas)
                loss = total.sum() / len(global_batch)
                loss.backward(inputs=None if train else [table.weight])
                values = torch.stack([total.sum()] + [losses[k].sum() for k in self.task.loss_keys]).detach().double()
            else:
                table.renormalize(global_rows)
            if train:
                all_reduce_gradients(self.network.parameters(), self.dist)
            table.reduce_gradient(global_rows, self.dist)
            if train:
                if self.s.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(self.network.parameters(), max_norm=float(self.s.grad_clip))
            table.clip_gradient(self.s.grad_clip_lat)
            if train:
                self.optimizer.step()
            table.step()
            values = all_reduce_sum(values, self.dist)
            sums += values.cpu() / len(global_batch)
            n_batches += 1
        if train:
            self.optimizer.zero_grad(set_to_none=True)
        table.zero_grad()
        means = (sums / max(n_batches, 1)).tolist()
        return dict(zip(keys, means))

    # ------------------------------------------------------------------ main loop
    def train(self, stop_after: Optional[int] = None) -> Dict[str, Any]:
        """Run (or continue) training up to ``training.nepochs``.

        Args:
            stop_after: train at most this many epochs in this call, then write a checkpoint
                and return (to split a run; re-running continues).
        Returns:
            ``{"start_epoch", "last_epoch", "nepochs", "history": [per-epoch log rows]}``;
            ``last_epoch < start_epoch`` when nothing was left to train.
        """
        start = self.resume()
        nepochs = self.s.nepochs
        end = nepochs if stop_after is None else min(nepochs, start + int(stop_after))
        keys = ["loss"] + list(self.task.loss_keys)
        columns = ["time_s", "lr", "lr_lat"] + keys + [f"val_{k}" for k in keys]
        csv_log = LossCSV(self.exp_dir / "losses.csv", columns, start) if self.dist.is_main else None
        logger = WandbLogger(self.wandb_mode if self.dist.is_main else "disabled", self.exp_dir, self.project,
                             self.exp_dir.name, self.config)
        history: List[Dict[str, Any]] = []
        bar = tqdm(range(start, end), initial=start, total=nepochs, desc=f"{self.task.name} {self.exp_dir.name}",
                   unit="epoch", disable=not self.progress, dynamic_ncols=True)
        last = start - 1
        try:
            for epoch in bar:
                t0 = time.time()
                row: Dict[str, Any] = {"epoch": epoch, **self.set_learning_rates(epoch)}
                row.update(self._pass(epoch, "train"))
                if len(self.task.val_set) and epoch % self.s.val_interval == 0:
                    row.update({f"val_{k}": v for k, v in self._pass(epoch, "val").items()})
                row["time_s"] = time.time() - t0
                last = epoch
                is_ckpt = epoch % self.s.ckpt_interval == 0 or epoch == end - 1
                if is_ckpt:
                    if self.dist.is_main:
                        self.save(epoch)
                        if epoch % self.s.ckpt_interval == 0 or epoch == nepochs - 1:
                            self._preview(epoch)
                    barrier(self.dist)
                if csv_log is not None:
                    csv_log.write(row)
                logger.log({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
                history.append(row)
                bar.set_postfix({k: f"{row[k]:.4g}" for k in keys[:4]}, refresh=False)
        finally:
            bar.close()
            logger.finish()
        return {"start_epoch": start, "last_epoch": last, "nepochs": nepochs, "history": history}

    def _preview(self, epoch: int) -> None:
        if self.s.n_preview <= 0:
            return
        out_dir = self.exp_dir / "recs" / f"epoch_{epoch}"
        latents = {"train": self.latents.weight.detach(), "val": self.latents_val.weight.detach()}
        self.network.eval()
        try:
            png = self.task.preview(epoch, out_dir, latents)
            if png is not None:
                tqdm.write(f"epoch {epoch}: preview {png}")
        finally:
            self.network.train()


def training_summary(result: Mapping[str, Any], exp_dir: PathLike) -> str:
    """One line about what :meth:`AutoDecoderTrainer.train` did (its ``result``)."""
    start, last, nepochs = result["start_epoch"], result["last_epoch"], result.get("nepochs")
    if last < start:
        return (f"nothing left to train: {exp_dir} already has all {nepochs} epochs "
                f"(newest checkpoint: epoch {start - 1})")
    return f"trained epochs {start}..{last} of {nepochs} -> {exp_dir}"


def run_training(task: TrainingTask, settings: CommonTrainingSettings, exp_dir: PathLike, device: torch.device,
                 dist_info: DistInfo, wandb_mode: str, project: str, config: Mapping[str, Any], progress: bool,
                 stop_after: Optional[int]) -> Dict[str, Any]:
    """Train ``task`` with an :class:`AutoDecoderTrainer` (network and latent tables start equal in
    every process of a data-parallel run) and return what :meth:`AutoDecoderTrainer.train` returns."""
    trainer = AutoDecoderTrainer(task, settings, exp_dir, device, dist_info, wandb_mode=wandb_mode,
                                 project=project, config=config, progress=progress)
    broadcast_module(task.network, dist_info)
    broadcast_module(trainer.latents.embedding, dist_info)
    broadcast_module(trainer.latents_val.embedding, dist_info)
    return trainer.train(stop_after=stop_after)
