"""Fine-tuning AdaptiveClick on a team's annotations: data from Label Studio or benchmark folders, training with
the Adaptive Focal Loss and simulated clicks (also under torchrun), NoC validation, the publication gate and the
model registry the backend watches.

Entry point: ``adaptiveclick finetune`` (:mod:`finetune.cli`). :mod:`finetune.registry` is also read by the backend
and imports no training code; this package file imports nothing so that importing it stays cheap.
"""
