"""``adaptiveclick``: the one console command. Subcommands live with the part they drive."""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module with add_arguments(parser) and run(args) -> int, one-line help)
COMMANDS = {
    "benchmark": ("benchmarks.cli", "print latency/speed figures (predictor, MSDA kernels, HTTP backend)"),
    "serve": ("backend.server", "run the Label Studio ML backend (gunicorn, default 0.0.0.0:9090)"),
    "evaluate": ("evaluation.cli", "NoC evaluation of a predictor on GrabCut, Berkeley, DAVIS, ... (tables, plots)"),
    "finetune": ("finetune.cli", "fine-tune on Label Studio annotations or datasets, validate by NoC, publish"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adaptiveclick", description="AdaptiveClick interactive segmentation")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip(),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
