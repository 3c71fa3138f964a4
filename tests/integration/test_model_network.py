"""The network is the reference AdaptiveClick: same state_dict keys/shapes and the same outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from adaptiveclick.model import build_adaptiveclick
from adaptiveclick.model.camd import click_aware_block_mask

from seeded_weights import golden_inputs, seeded_state_dict

DATA = Path(__file__).resolve().parents[1] / "data"

EXPECTED = {"base": (457, 121_886_314), "huge": (697, 708_057_706)}


@pytest.mark.parametrize("size", ["base", "huge"])
def test_state_dict_matches_reference_keys_and_shapes(size):
    with torch.device("meta"):  # shapes only: no 2.8 GB allocation for Huge
        net = build_adaptiveclick(size)
    entries, params = EXPECTED[size]
    state = net.state_dict()
    assert len(state) == entries
    assert sum(p.numel() for p in net.parameters()) == params
    reference = {k: list(shape) for k, shape in json.loads((DATA / f"reference_keys_{size}.json").read_text())}
    assert {k: list(v.shape) for k, v in state.items()} == reference


@pytest.fixture(scope="module")
def seeded_base():
    net = build_adaptiveclick("base")
    net.load_state_dict(seeded_state_dict(net), strict=True)
    return net


def test_outputs_match_reference_implementation(seeded_base):
    """data/reference_outputs_base.json holds the reference model's outputs for the same weights and inputs."""
    golden = json.loads((DATA / "reference_outputs_base.json").read_text())
    image, points = golden_inputs()
    with torch.no_grad():
        out = seeded_base(image, points)
    logits = out["predictions"]["pred_logits"]
    instances = out["instances"][:, 0, ::28, ::28]
    torch.testing.assert_close(logits, torch.tensor(golden["pred_logits"]), atol=1e-4, rtol=1e-4)
    expected = torch.tensor(golden["instances"])
    torch.testing.assert_close(instances, expected, atol=1e-3 * expected.abs().max().item(), rtol=1e-4)
    assert out["instances"].shape == (2, 1, 448, 448)
    assert out["predictions"]["pred_masks"].shape == (2, 10, 112, 112)
    assert len(out["predictions"]["aux_outputs"]) == 9


def test_outputs_are_deterministic(seeded_base):
    image, points = golden_inputs()
    with torch.no_grad():
        a = seeded_base(image[:1], points[:1])["instances"]
        b = seeded_base(image[:1], points[:1])["instances"]
    assert torch.equal(a, b)


def test_clicks_change_the_prediction(seeded_base):
    image, points = golden_inputs()
    moved = points[:1].clone()
    moved[0, 0, :2] = torch.tensor([400.0, 400.0])
    with torch.no_grad():
        a = seeded_base(image[:1], points[:1])["instances"]
        b = seeded_base(image[:1], moved)["instances"]
    assert (a - b).abs().max() > 1e-3


def test_other_input_sizes_interpolate_position_embeddings(seeded_base):
    image = torch.rand(1, 4, 672, 672)
    points = torch.tensor([[[300.0, 300.0, 0.0], [-1.0, -1.0, -1.0]]])
    with torch.no_grad():
        out = seeded_base(image, points)
    assert out["instances"].shape == (1, 1, 672, 672)
    assert torch.isfinite(out["instances"]).all()


def test_input_not_multiple_of_patch_is_rejected(seeded_base):
    with pytest.raises(ValueError, match="multiple of the patch size"):
        seeded_base(torch.rand(1, 4, 450, 448), torch.full((1, 2, 3), -1.0))


def test_click_aware_mask_opens_click_neighbourhood_for_foreground_queries():
    # 2 queries: query 0 foreground, query 1 background; one positive disk at the top-left of a 64x64 input
    logits = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    positive = torch.zeros(1, 64, 64)
    positive[0, 2:6, 2:6] = 1.0
    blocked = click_aware_block_mask(logits, positive, (8, 8), num_heads=2)
    assert blocked.shape == (2, 2, 64)
    grid = blocked.view(2, 2, 8, 8)
    # both heads agree; three 3x3/stride-2 max-pools grow the disk (rows/cols 2..5 of 64) to cells 0..1 of 8
    assert torch.equal(grid[0], grid[1])
    expected_open = torch.zeros(8, 8, dtype=torch.bool)
    expected_open[:2, :2] = True
    assert torch.equal(~grid[0, 0], expected_open)
    # the background query is blocked everywhere by the click-aware mask
    assert grid[0, 1].all()
