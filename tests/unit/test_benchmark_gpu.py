"""``adaptiveclick benchmark gpu`` on a machine without a CUDA device: its arguments, and that it says it skipped and
runs nothing (the check itself runs where a GPU is: docs/scaling.md)."""

from __future__ import annotations

import subprocess

import pytest

from adaptiveclick.benchmarks import gpu
from adaptiveclick.cli import build_parser


def parse(*argv: str):
    return build_parser("benchmark").parse_args(["benchmark", "gpu", *argv])


def test_defaults_and_options():
    args = parse()
    assert (args.weights, args.images, args.clicks, args.rounds, args.steps) == ("random:base", 3, 5, 3, 20)
    assert args.sessions == [1, 4, 16] and not (args.skip_build or args.skip_tests or args.require_gpu)
    args = parse("--weights", "/w/b.pth", "--sessions", "2, 8", "--steps", "5", "--skip-build", "--skip-tests")
    assert (args.weights, args.sessions, args.steps, args.skip_build, args.skip_tests) == (
        "/w/b.pth",
        [2, 8],
        5,
        True,
        True,
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (("--sessions", "1,x"), "--sessions takes counts such as 1,4,16"),
        (("--sessions", "0,4"), "--sessions takes counts of at least 1"),
        (("--steps", "0"), "must be at least 1"),
        (("--images", "three"), "expected a whole number"),
    ],
)
def test_bad_arguments_say_what_to_fix(argv, message, capsys):
    with pytest.raises(SystemExit) as exited:
        parse(*argv)
    assert exited.value.code == 2 and message in capsys.readouterr().err


def test_without_a_gpu_it_says_so_and_runs_nothing(monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail(f"ran {a}"))
    assert gpu.main(parse()) == 0
    assert capsys.readouterr().out.strip() == gpu.SKIP_MESSAGE
    assert gpu.main(parse("--require-gpu")) == 2
    assert "SKIPPED" in capsys.readouterr().out
