"""finetune.trainer: the loss goes down on GrabCut crops; accumulation, click rounds, checkpoints and resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from adaptiveclick.finetune.config import TrainConfig
from adaptiveclick.finetune.data import dataset_records
from adaptiveclick.finetune.distributed import init_distributed
from adaptiveclick.finetune.network import build_initial_network
from adaptiveclick.finetune.trainer import CHECKPOINT, WEIGHTS_FILE, Trainer, autocast_dtype

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def grabcut(data_root):
    return dataset_records("GrabCut", data_root)[:4]


def make_trainer(records, out_dir, **overrides):
    values = {"steps": 4, "batch_size": 2, "crop_size": 96, "checkpoint_every": 2, "lr_milestones": (1000,)}
    values.update(overrides)
    net, _ = build_initial_network("random:tiny", seed=0)
    return Trainer(TrainConfig(**values), net, records, out_dir, init_distributed("cpu"), workers=0, progress=False)


def train_losses(out_dir) -> list[float]:
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    return [e["loss"] for e in map(json.loads, lines) if e["kind"] == "train"]


def test_loss_decreases_over_a_few_dozen_steps_on_grabcut_crops(grabcut, tmp_path):
    trainer = make_trainer(grabcut, tmp_path, steps=30, lr=2e-4, checkpoint_every=100)
    summary = trainer.run()
    losses = train_losses(tmp_path)
    assert summary["steps"] == 30 and len(losses) == 30 and all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:5]), losses
    assert (tmp_path / WEIGHTS_FILE).is_file() and (tmp_path / "metrics.png").is_file()


def test_accumulation_matches_a_bigger_batch(grabcut, tmp_path):
    """batch 2 x 1 micro-batch and batch 1 x 2 micro-batches see the same crops: same gradients (one target per
    sample with binary targets, so the mask-loss normalisation is the same)."""
    grads = []
    for batch, accumulation in ((2, 1), (1, 2)):
        trainer = make_trainer(
            grabcut,
            tmp_path / f"{batch}",
            batch_size=batch,
            accumulation=accumulation,
            max_extra_clicks=0,
            target_mode="binary",
        )
        captured: dict = {}

        def capture(*_, net=trainer.net, into=captured):
            into.update({n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None})

        trainer.optimizer.register_step_pre_hook(capture)
        trainer.train_step(iter(trainer.data_loader()))
        grads.append(captured)
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 100
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-3, atol=1e-6, msg=name)


def test_click_rounds_add_corrective_clicks_without_gradient(grabcut, tmp_path, monkeypatch):
    import adaptiveclick.finetune.trainer as trainer_module

    trainer = make_trainer(grabcut, tmp_path, max_extra_clicks=3)
    calls = []
    real = trainer_module.next_clicks

    def spy(probs, gt, points, click, rng, valid=None):
        calls.append((click, probs.requires_grad, trainer.net.training))
        return real(probs, gt, points, click, rng, valid)

    monkeypatch.setattr(trainer_module, "next_clicks", spy)
    batch = next(iter(trainer.data_loader()))

    class ThreeRounds:
        """Draws like a seeded generator, except that it asks for the most click rounds."""

        real = np.random.default_rng(0)

        def integers(self, low, high=None, **kwargs):
            return 3 if (low, high) == (0, 4) else self.real.integers(low, high, **kwargs)

    losses = trainer.forward_losses(batch, ThreeRounds())
    assert [c[0] for c in calls] == [1, 2, 3]
    assert not any(requires_grad for _, requires_grad, _ in calls) and not any(training for *_, training in calls)
    assert trainer.net.training and losses["loss"].requires_grad


def test_resume_repeats_the_uninterrupted_run_exactly(grabcut, tmp_path):
    straight = make_trainer(grabcut, tmp_path / "straight", steps=4, checkpoint_every=2)
    straight.run()
    first = make_trainer(grabcut, tmp_path / "resumed", steps=2, checkpoint_every=2)
    first.run()
    resumed = make_trainer(grabcut, tmp_path / "resumed", steps=4, checkpoint_every=2)
    resumed.load_checkpoint(tmp_path / "resumed" / CHECKPOINT)
    assert resumed.step == 2
    resumed.run()
    a, b = straight.net.state_dict(), resumed.net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert train_losses(tmp_path / "straight") == train_losses(tmp_path / "resumed")


def test_resume_drops_log_lines_of_redone_steps(grabcut, tmp_path):
    trainer = make_trainer(grabcut, tmp_path, steps=2, checkpoint_every=2)
    trainer.run()
    with open(tmp_path / "metrics.jsonl", "a") as f:  # a step logged after the checkpoint, then a crash
        f.write(json.dumps({"kind": "train", "step": 3, "loss": 1.0}) + "\n")
    again = make_trainer(grabcut, tmp_path, steps=3)
    again.load_checkpoint(tmp_path / CHECKPOINT)
    assert [e["step"] for e in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())] == [1, 2]


def test_checkpoint_holds_the_whole_training_state_and_unused_parameters_stay_frozen(grabcut, tmp_path):
    trainer = make_trainer(grabcut, tmp_path, steps=2, checkpoint_every=1)
    cls_token = trainer.net.backbone.cls_token.detach().clone()
    trainer.run()
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert state["step"] == 2 and state["config"]["steps"] == 2 and state["model_config"]["name"] == "tiny"
    assert {"model", "optimizer", "scheduler", "scaler"} <= state.keys()
    assert state["optimizer"]["state"]  # Adam moments
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name != "last.pt"]
    assert not trainer.net.backbone.cls_token.requires_grad
    assert torch.equal(cls_token, trainer.net.backbone.cls_token)


def test_non_finite_loss_stops_the_run(grabcut, tmp_path):
    trainer = make_trainer(grabcut, tmp_path, max_extra_clicks=0)
    real = trainer.criterion.__call__

    def broken(predictions, instances):
        losses = real(predictions, instances)
        return {**losses, "loss": losses["loss"] * float("nan")}

    trainer.criterion = broken
    with pytest.raises(FloatingPointError, match="step 1"):
        trainer.train_step(iter(trainer.data_loader()))


def test_input_size_must_fit_the_patch_size(grabcut, tmp_path):
    with pytest.raises(ValueError, match="patch size"):
        make_trainer(grabcut, tmp_path, crop_size=100)


def test_autocast_choice():
    cpu = torch.device("cpu")
    assert autocast_dtype("auto", cpu) is None and autocast_dtype("fp32", cpu) is None
    assert autocast_dtype("bf16", cpu) == torch.bfloat16
    with pytest.raises(ValueError, match="CUDA"):
        autocast_dtype("fp16", cpu)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mixed_precision_training_on_gpu(grabcut, tmp_path):
    net, _ = build_initial_network("random:tiny", seed=0)
    for precision in ("bf16", "fp16"):
        config = TrainConfig(steps=3, batch_size=2, crop_size=128, precision=precision, checkpoint_every=3)
        trainer = Trainer(
            config, net, grabcut, tmp_path / precision, init_distributed("cuda"), workers=0, progress=False
        )
        trainer.run()
        assert all(np.isfinite(train_losses(tmp_path / precision)))
