"""The training configuration: everything that decides what a fine-tune computes (saved with the run; a resume
reuses it). Kept free of heavy imports so that the command line can be parsed quickly."""

from __future__ import annotations

from dataclasses import dataclass, fields

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
TARGET_MODES = ("reference", "binary")


@dataclass
class TrainConfig:
    """Everything that decides what a run computes (saved with the run; a resume reuses it)."""

    steps: int = 1000
    batch_size: int = 8  # per process
    accumulation: int = 1
    lr: float = 5e-5
    lr_milestones: tuple[int, ...] = ()  # steps where lr *= lr_gamma; default: at 2/3 of the run
    lr_gamma: float = 0.1
    crop_size: int = 448
    max_points: int = 24
    prob_gamma: float = 0.8
    max_extra_clicks: int = 3
    target_mode: str = "reference"
    precision: str = "auto"
    seed: int = 0
    checkpoint_every: int = 50
    val_every: int = 0  # 0: validate at the end only
    val_clicks: int = 20

    def __post_init__(self) -> None:
        self.lr_milestones = tuple(int(m) for m in self.lr_milestones)
        for name in ("steps", "batch_size", "accumulation", "crop_size", "max_points", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
        if self.target_mode not in TARGET_MODES:
            raise ValueError(f"target_mode must be one of {', '.join(TARGET_MODES)}")
        if self.max_extra_clicks < 0 or self.lr <= 0 or not 0 < self.lr_gamma <= 1:
            raise ValueError("max_extra_clicks must be >= 0, lr > 0 and 0 < lr_gamma <= 1")

    def milestones(self) -> tuple[int, ...]:
        return self.lr_milestones or (max(1, round(self.steps * 2 / 3)),)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})
