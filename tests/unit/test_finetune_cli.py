"""finetune.cli: ``adaptiveclick finetune`` options, help, and clear errors with exit status 2."""

from __future__ import annotations

import argparse

import pytest

from adaptiveclick.cli import build_parser, main
from adaptiveclick.finetune.cli import options_from_args
from adaptiveclick.labelstudio.settings import LabelStudioSettings


def parse(*argv: str) -> argparse.Namespace:
    return build_parser("finetune").parse_args(["finetune", *argv])


def test_options_map_to_the_job(tmp_path):
    args = parse(
        "--output",
        str(tmp_path),
        "--ls-export",
        "a.json",
        "--ls-export",
        "b.json",
        "--dataset",
        "GrabCut",
        "--init",
        "random:tiny",
        "--steps",
        "12",
        "--batch-size",
        "3",
        "--accumulation",
        "2",
        "--lr",
        "1e-4",
        "--lr-milestones",
        "5,9",
        "--input-size",
        "224",
        "--precision",
        "bf16",
        "--targets",
        "binary",
        "--ls-labels",
        "Cat, Dog",
        "--registry",
        "s3://b/p",
        "--force",
        "--version",
        "v9",
        "--val-every",
        "4",
    )
    opts = options_from_args(args)
    assert opts.output == tmp_path and [p.name for p in opts.ls_exports] == ["a.json", "b.json"]
    assert opts.datasets == ["GrabCut"] and opts.steps == 12 and opts.epochs is None
    assert (opts.train.batch_size, opts.train.accumulation, opts.train.lr) == (3, 2, 1e-4)
    assert opts.train.lr_milestones == (5, 9) and opts.train.crop_size == 224 and opts.train.precision == "bf16"
    assert opts.train.target_mode == "binary" and opts.train.val_every == 4
    assert opts.ls_labels == ["Cat", "Dog"] and opts.registry == "s3://b/p" and opts.force and opts.publish
    assert opts.version == "v9"


def test_label_studio_credentials_default_to_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LABEL_STUDIO_URL", "http://ls:8080")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "key")
    opts = options_from_args(parse("--output", str(tmp_path), "--ls-project", "3"))
    assert (opts.ls_url, opts.ls_api_key, opts.ls_project) == (None, None, "3")
    # the job reads them with the backend's checked settings; options win over the environment
    settings = LabelStudioSettings.from_env().with_connection(opts.ls_url, opts.ls_api_key)
    assert (settings.url, settings.api_key) == ("http://ls:8080", "key")
    assert LabelStudioSettings.from_env().with_connection("http://other:1", None).url == "http://other:1"


def test_steps_and_epochs_exclude_each_other(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse("--output", str(tmp_path), "--steps", "3", "--epochs", "2")
    assert "not allowed with" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse("--output", str(tmp_path), "--lr-milestones", "a,b")


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "no training data"),
        (["--resume"], "holds no fine-tune run to resume"),
        (["--dataset", "GrabCut"], "no starting point"),
        (["--dataset", "NoSuchSet", "--init", "random:tiny"], "unknown dataset"),
        (["--ls-export", "/nonexistent/export.json", "--init", "random:tiny"], "cannot read Label Studio export"),
        (["--dataset", "GrabCut", "--init", "random:tiny", "--steps", "0"], "--steps/--epochs must be positive"),
        (["--dataset", "GrabCut", "--init", "random:tiny", "--input-size", "100"], "patch size"),
    ],
)
def test_bad_input_exits_2_with_a_message(tmp_path, capsys, data_root, argv, message):
    code = main(
        [
            "finetune",
            "--output",
            str(tmp_path / "run"),
            "--data-root",
            str(data_root),
            "--workers",
            "0",
            "--no-progress",
            "--device",
            "cpu",
            *argv,
        ]
    )
    assert code == 2
    assert message in capsys.readouterr().err


def test_help_lists_the_groups(capsys):
    with pytest.raises(SystemExit):
        build_parser("finetune").parse_args(["finetune", "--help"])
    text = capsys.readouterr().out
    assert "--ls-project" in text and "--resume" in text and "--registry" in text and "torchrun" in text
