"""The training loop: iterative click simulation, AFL criterion, Adam with step decay, AMP, accumulation, DDP.

One optimizer step consumes ``accumulation`` micro-batches of ``batch_size`` crops per process. For each
micro-batch, as the reference trainer: 0..``max_extra_clicks`` rounds run the network without gradient (eval mode)
and add a corrective click each, feeding the predicted probabilities back as the previous mask; then the network
runs with gradient on the final clicks and the loss of :mod:`finetune.criterion` is taken against the target
resized to the mask-prediction size.

State is checkpointed atomically to ``OUT/checkpoints/last.pt`` (weights, optimizer, scheduler, grad scaler, step)
every ``checkpoint_every`` steps; a resumed run continues from it and, because every random choice derives from
the seed and the step or sample position, repeats exactly what the interrupted run would have done.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from .augment import AugmentConfig
from .click_sampling import ClickSampler, ClickSamplerConfig, next_clicks
from .config import TrainConfig
from .criterion import AdaptiveClickCriterion
from .data import ClickTrainingSet, ImageRecord, PositionSampler
from .distributed import DistributedContext, barrier, gather_objects, mean_over_processes, parameter_fingerprint
from .metrics_log import MetricsLog, write_status
from .network import atomic_torch_save, freeze_unused, save_weights
from .validation import network_predictor, noc_metrics

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoints/last.pt"
CONFIG_FILE = "train_config.json"
WEIGHTS_FILE = "model.pth"


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` (None: full fp32)."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("fp16 autocast needs a CUDA device; use bf16 or fp32 on CPU")
    return torch.bfloat16 if precision == "bf16" else torch.float16


class Trainer:
    """Trains ``net`` on ``records`` in this process (one of a torchrun group when ``context`` says so).

    Args:
        config: what to compute (steps, batch, recipe, precision, seed...).
        net: the starting network (moved to ``context.device``; its unused parameters are frozen).
        records: training images.
        out_dir: run folder (checkpoints, metrics, weights).
        context: rank, world size and device (:func:`finetune.distributed.init_distributed`).
        val_samples: evaluation samples for NoC validation (none: no validation).
        workers: data-loading processes.
        progress: show a progress bar (main process only).
    """

    def __init__(
        self,
        config: TrainConfig,
        net,
        records: Sequence[ImageRecord],
        out_dir: str | Path,
        context: DistributedContext,
        val_samples: Sequence = (),
        workers: int = 2,
        progress: bool = True,
    ) -> None:
        self.config, self.context, self.out = config, context, Path(out_dir)
        patch = net.patch_size[0]
        if config.crop_size % patch:
            raise ValueError(f"input size {config.crop_size} is not a multiple of the network's patch size {patch}")
        self.device = context.device
        self.net = net.to(self.device).train()
        freeze_unused(self.net)
        self.criterion = AdaptiveClickCriterion(self.net.criterion.empty_weight, target_mode=config.target_mode)
        params = [p for p in self.net.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=config.lr, betas=(0.9, 0.999), eps=1e-8)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, list(config.milestones()), gamma=config.lr_gamma
        )
        self.amp_dtype = autocast_dtype(config.precision, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.sampler = ClickSampler(ClickSamplerConfig(max_points=config.max_points, prob_gamma=config.prob_gamma))
        self.dataset = ClickTrainingSet(
            records, self.sampler, AugmentConfig(crop_size=config.crop_size), seed=config.seed
        )
        self.val_samples = list(val_samples)
        self.workers, self.progress = workers, progress
        self.metrics = MetricsLog(self.out) if context.is_main else None
        self.step = 0
        self.model = (
            DistributedDataParallel(self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            if context.enabled
            else self.net
        )

    # -- state -----------------------------------------------------------------------------------------------

    def state(self) -> dict:
        return {
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "config": asdict(self.config),
            "model_config": asdict(self.net.config),
            "world_size": self.context.world_size,
        }

    def save_checkpoint(self) -> None:
        if self.context.is_main:
            atomic_torch_save(self.state(), self.out / CHECKPOINT)
        barrier(self.context)

    def load_checkpoint(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        if self.metrics is not None:
            self.metrics.truncate_after(self.step)
        log.info("resumed", extra={"step": self.step, "checkpoint": str(path)})

    # -- one step --------------------------------------------------------------------------------------------

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def forward_losses(self, batch: dict, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        images = batch["images"].to(self.device, non_blocking=True)
        instances = batch["instances"].to(self.device, non_blocking=True)
        points = batch["points"].to(self.device, non_blocking=True)
        prev = torch.zeros_like(instances)
        rounds = int(rng.integers(0, self.config.max_extra_clicks + 1))
        if rounds:
            self.net.eval()
            with torch.no_grad(), self.autocast():
                for click in range(1, rounds + 1):
                    logits = self.net(torch.cat((images, prev), dim=1), points)["instances"]
                    prev = torch.sigmoid(logits.float())
                    points = next_clicks(prev, instances, points, click, rng, valid=batch["valid"])
            self.net.train()
        with self.autocast():
            output = self.model(torch.cat((images, prev), dim=1), points)
        return self.criterion(output["predictions"], instances)

    def train_step(self, batches) -> dict[str, float]:
        cfg = self.config
        totals: dict[str, float] = {}
        for micro in range(cfg.accumulation):
            batch = next(batches)
            rng = np.random.default_rng([cfg.seed, 3, self.step, micro, self.context.rank])
            last = micro == cfg.accumulation - 1
            sync = nullcontext() if last or not self.context.enabled else self.model.no_sync()
            with sync:
                losses = self.forward_losses(batch, rng)
                self.scaler.scale(losses["loss"] / cfg.accumulation).backward()
            for key, value in losses.items():
                totals[key] = totals.get(key, 0.0) + float(value.detach()) / cfg.accumulation
        if not math.isfinite(totals["loss"]) and self.amp_dtype != torch.float16:
            raise FloatingPointError(
                f"the loss became {totals['loss']} at step {self.step + 1}: lower --lr, or train in fp32"
            )
        self.scaler.step(self.optimizer)  # with fp16, skips steps whose gradients overflowed
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        return totals

    # -- the run ---------------------------------------------------------------------------------------------

    def data_loader(self) -> DataLoader:
        cfg = self.config
        start = self.step * cfg.accumulation  # micro-batches already consumed
        sampler = PositionSampler(cfg.batch_size, self.context.world_size, self.context.rank, start)
        return DataLoader(
            self.dataset,
            batch_size=cfg.batch_size,
            sampler=sampler,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=_quiet_worker,
            persistent_workers=False,
        )

    def validate(self) -> dict | None:
        if not self.val_samples:
            return None
        self.net.eval()
        predictor = network_predictor(self.net, f"step-{self.step}", self.device, self.config.crop_size)
        metrics = noc_metrics(predictor, self.val_samples, self.config.val_clicks, self.context)
        self.net.train()
        if self.metrics is not None:
            self.metrics.append("val", self.step, **metrics)
            self.metrics.plot()
        return metrics

    def check_sync(self) -> list[str]:
        """Fingerprints of the weights on every process; raises when they differ."""
        prints = gather_objects(parameter_fingerprint(self.net), self.context)
        if len(set(prints)) > 1:
            raise RuntimeError(f"processes out of sync at step {self.step}: weight fingerprints {prints}")
        if self.metrics is not None and self.context.enabled:
            self.metrics.append("sync", self.step, fingerprints=prints)
        return prints

    def run(self) -> dict:
        cfg, main = self.config, self.context.is_main
        bar = tqdm(
            total=cfg.steps,
            initial=self.step,
            desc="finetune",
            unit="step",
            dynamic_ncols=True,
            disable=not (main and self.progress),
        )
        loader = self.data_loader()
        batches = iter(loader)
        last_val, started, losses = None, time.monotonic(), {}
        try:
            while self.step < cfg.steps:
                tick = time.monotonic()
                own = self.train_step(batches)
                losses = mean_over_processes(own, self.context)
                per_rank = {"rank_loss": gather_objects(own["loss"], self.context)} if self.context.enabled else {}
                seconds = time.monotonic() - tick
                if main:
                    samples = cfg.batch_size * cfg.accumulation * self.context.world_size
                    self.metrics.append(
                        "train",
                        self.step,
                        **losses,
                        **per_rank,
                        lr=self.scheduler.get_last_lr()[0],
                        seconds=round(seconds, 4),
                        samples_per_s=round(samples / seconds, 3),
                    )
                    write_status(self.out, "running", step=self.step, steps=cfg.steps, loss=losses["loss"])
                    bar.update(1)
                    bar.set_postfix(loss=f"{losses['loss']:.3f}", refresh=False)
                if (cfg.val_every and self.step % cfg.val_every == 0) or self.step == cfg.steps:
                    last_val = self.validate()
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                    self.check_sync()
                    self.save_checkpoint()
                    if main:
                        self.metrics.plot()
        finally:
            bar.close()
            del batches
        summary = {
            "steps": self.step,
            "final_loss": losses.get("loss"),
            "validation": last_val,
            "seconds": round(time.monotonic() - started, 1),
            "world_size": self.context.world_size,
        }
        if main:
            save_weights(
                self.net, self.out / WEIGHTS_FILE, {"finetune": {"steps": self.step, "train_config": asdict(cfg)}}
            )
            self.metrics.plot()
        barrier(self.context)
        return summary


def _quiet_worker(_worker_id: int) -> None:
    cv2.setNumThreads(1)  # data workers run side by side: no nested thread pools
    torch.set_num_threads(1)


def save_config(out_dir: Path, config: TrainConfig, extra: dict) -> None:
    from .metrics_log import write_json_atomic

    write_json_atomic(Path(out_dir) / CONFIG_FILE, {"train": asdict(config), **extra})


def load_config(out_dir: Path) -> dict:
    path = Path(out_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{out_dir} holds no fine-tune run to resume (no {CONFIG_FILE})")
    return json.loads(path.read_text())


def checkpoint_path(out_dir: Path) -> Path:
    return Path(out_dir) / CHECKPOINT
