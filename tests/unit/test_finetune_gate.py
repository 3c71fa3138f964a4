"""finetune.gate: publish only a better candidate (NoC@90, then NoC@85), or when forced; record the decision.

The NoC evaluation is stubbed here (the gate takes it as a parameter); the real protocol runs in the job tests.
"""

from __future__ import annotations

import pytest

from adaptiveclick.finetune.gate import gate, is_better, publish_candidate
from adaptiveclick.storage.registry import open_registry


def stub(results: dict):
    calls = []

    def evaluate(predictor, samples, n_clicks=20):
        calls.append((predictor, len(samples), n_clicks))
        return {"noc85": results[predictor][0], "noc90": results[predictor][1], "miou_per_click": [0.5]}

    evaluate.calls = calls
    return evaluate


SAMPLES = ["s1", "s2"]


def test_is_better_uses_noc90_then_noc85():
    assert is_better({"noc85": 5, "noc90": 7}, {"noc85": 3, "noc90": 8})
    assert not is_better({"noc85": 3, "noc90": 8}, {"noc85": 5, "noc90": 7})
    assert is_better({"noc85": 4, "noc90": 7}, {"noc85": 5, "noc90": 7})
    assert not is_better({"noc85": 5, "noc90": 7}, {"noc85": 5, "noc90": 7})


def test_better_candidate_is_published_worse_is_not():
    evaluate = stub({"cand": (3.0, 5.0), "cur": (4.0, 6.0)})
    decision = gate("cand", "cur", SAMPLES, n_clicks=10, current_name="v1", evaluate=evaluate)
    assert decision.publish and "better" in decision.reason and decision.current_name == "v1"
    assert evaluate.calls == [("cand", 2, 10), ("cur", 2, 10)]
    worse = gate("cur", "cand", SAMPLES, evaluate=evaluate)
    assert not worse.publish and "not better" in worse.reason
    forced = gate("cur", "cand", SAMPLES, force=True, evaluate=evaluate)
    assert forced.publish and forced.forced and forced.reason.startswith("forced")
    assert forced.current == {"noc85": 3.0, "noc90": 5.0, "miou_per_click": [0.5]}


def test_without_current_weights_the_candidate_goes_live():
    decision = gate("cand", None, SAMPLES, evaluate=stub({"cand": (9.0, 12.0)}))
    assert decision.publish and decision.current is None


def test_no_samples_is_an_error():
    with pytest.raises(ValueError, match="validation"):
        gate("cand", "cur", [], evaluate=stub({}))


def test_publish_candidate_records_the_decision(tmp_path):
    registry = open_registry(tmp_path / "reg")
    weights = tmp_path / "model.pth"
    weights.write_bytes(b"weights")
    rejected = gate("cur", "cand", SAMPLES, evaluate=stub({"cand": (3.0, 5.0), "cur": (4.0, 6.0)}))
    assert publish_candidate(registry, weights, rejected) is None and registry.current() is None
    accepted = gate("cand", "cur", SAMPLES, current_name="v0", evaluate=stub({"cand": (3.0, 5.0), "cur": (4.0, 6.0)}))
    info = publish_candidate(
        registry,
        weights,
        accepted,
        config={"train": {"lr": 1e-5}},
        extra_metrics={"training": {"steps": 10}},
        version="v1",
        parent="v0",
    )
    assert registry.current() == info and info.parent == "v0" and info.config == {"train": {"lr": 1e-5}}
    assert info.metrics["noc90"] == 5.0 and info.metrics["training"] == {"steps": 10}
    assert info.metrics["gate"]["compared_with"] == "v0" and info.metrics["gate"]["current"]["noc90"] == 6.0
