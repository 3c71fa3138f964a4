"""Fine-tuning AdaptiveClick on a team's annotations: data from Label Studio or benchmark folders, training with
the Adaptive Focal Loss and simulated clicks (also under torchrun), NoC validation, the publication gate, and
publishing to the model registry (:mod:`storage.registry`) that the backend follows.

Entry point: ``adaptiveclick finetune`` (:mod:`finetune.cli`). This package file imports nothing so that importing
it stays cheap.
"""
