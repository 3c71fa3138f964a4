"""finetune.config: the training configuration validates itself and survives a save/load."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from adaptiveclick.finetune.config import TrainConfig


def test_defaults_are_the_reference_recipe():
    config = TrainConfig()
    assert (
        config.lr,
        config.lr_gamma,
        config.crop_size,
        config.max_points,
        config.prob_gamma,
        config.max_extra_clicks,
    ) == (5e-5, 0.1, 448, 24, 0.8, 3)
    assert config.milestones() == (667,)
    assert TrainConfig(steps=10, lr_milestones=[4, 8]).milestones() == (4, 8)


def test_round_trip_ignores_unknown_keys():
    config = TrainConfig(steps=7, lr_milestones=(3,), precision="bf16")
    again = TrainConfig.from_dict({**asdict(config), "lr_milestones": [3], "from_the_future": 1})
    assert again == config


@pytest.mark.parametrize(
    "bad",
    [
        {"steps": 0},
        {"batch_size": 0},
        {"precision": "fp8"},
        {"target_mode": "soft"},
        {"lr": 0.0},
        {"lr_gamma": 1.5},
        {"max_extra_clicks": -1},
    ],
)
def test_invalid_values_are_refused(bad):
    with pytest.raises(ValueError):
        TrainConfig(**bad)
