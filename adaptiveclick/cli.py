"""``adaptiveclick``: the one console command. Subcommands live with the part they drive.

The parser is built lazily: ``adaptiveclick --help`` imports no subcommand, and ``adaptiveclick CMD ...`` imports
only CMD's module, whose argument set-up imports nothing heavy (torch is imported when a command runs).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module with add_arguments(parser) and run(args) -> int, one-line help)
COMMANDS = {
    "serve": ("adaptiveclick.backend.cli", "run the Label Studio ML backend (gunicorn, default 0.0.0.0:9090)"),
    "evaluate": ("adaptiveclick.evaluation.cli", "NoC evaluation of a predictor on GrabCut, Berkeley, DAVIS, ... (tables, plots)"),
    "finetune": ("adaptiveclick.finetune.cli", "fine-tune on Label Studio annotations or datasets, validate by NoC, publish"),
    "annotate": ("adaptiveclick.annotate.cli", "masks for a whole Label Studio project from its rectangles, as predictions"),
    "benchmark": ("adaptiveclick.benchmarks.cli", "print latency/speed figures (predictor, MSDA kernels, HTTP backend, CPU)"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser, with the arguments of ``command`` only (every subcommand is listed either way)."""
    parser = argparse.ArgumentParser(prog="adaptiveclick", description="AdaptiveClick interactive segmentation")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        if name != command:
            sub.add_parser(name, help=help_text, add_help=False)
            continue
        module = importlib.import_module(module_name)
        parsed = sub.add_parser(
            name,
            help=help_text,
            description=(module.__doc__ or help_text).strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(parsed)
        parsed.set_defaults(_run=module.run)
    return parser


def chosen_command(argv: list[str]) -> str | None:
    """The subcommand ``argv`` names (its first word that is not an option), if it is one."""
    first = next((word for word in argv if not word.startswith("-")), None)
    return first if first in COMMANDS else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(chosen_command(argv)).parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
