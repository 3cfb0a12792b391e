"""The ``smartcash-ultra`` console script: SmartCash dataset, checkpoint and evaluation tools, one subcommand each.

A subcommand is one :class:`Command` in :data:`COMMANDS`: a help line, a function adding its arguments to its parser
and a function running it that returns the exit code. Exit codes: 0 done, 1 done but some inputs have problems
(``convert`` skipped them, ``check`` lists them; each as ``file: problem``), 2 a usage error or a dataset that cannot
be used (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass

from smartcash_ultra.tools.convert import check_size, check_workers, convert_dataset
from smartcash_ultra.tools.evaluation_commands import add_evaluate_arguments, add_runs_arguments, run_evaluate, run_runs
from smartcash_ultra.tools.report import scan_dataset
from smartcash_ultra.utils.errors import SmartCashError, summary
from smartcash_ultra.utils.shipped import MODELS, cfg_dir, copy_shipped, installed_version

EXIT_OK, EXIT_SKIPPED, EXIT_ERROR = 0, 1, 2
READERS = ("check", "stats")
"""Subcommands that only read a dataset: their own failure is exit 2 in one line, never 1 (problems found)."""


@dataclass(frozen=True)
class Command:
    """One subcommand: its help line, how to declare its arguments, and how to run it (returning the exit code)."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _checked(check: Callable[[int], int]) -> Callable[[str], int]:
    """Turn a ``check_*`` function into an argparse type, so a bad value is a usage error with the check's message."""

    def parse(text: str) -> int:
        try:
            return check(int(text))
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return parse


def _add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="data YAML, or a dataset folder with data.yaml or train/valid|val/test/images")
    parser.add_argument("dst", help="destination folder for the SmartCash tree (outside the source)")
    parser.add_argument("--size", type=_checked(check_size), default=640, help="letterbox size, multiple of 32")
    parser.add_argument(
        "--workers",
        type=_checked(check_workers),
        default=None,
        help="worker processes (0: none; default: CPUs-1, 8 max)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace destination files that have other content")


def _run_convert(args: argparse.Namespace) -> int:
    """Convert, print every skipped input on stderr and the counts on stdout."""
    report = convert_dataset(args.src, args.dst, size=args.size, workers=args.workers, overwrite=args.overwrite)
    for problem in report.problems:
        print(f"skipped {problem}", file=sys.stderr)
    print(report.summary())
    return EXIT_OK if report.ok else EXIT_SKIPPED


def _add_dataset_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="data YAML, or a dataset folder with data.yaml or train/valid|val/test/images")


def _add_stats_arguments(parser: argparse.ArgumentParser) -> None:
    _add_dataset_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")


def _run_check(args: argparse.Namespace) -> int:
    """Verify every file as training would; print the report; 1 when there is any problem."""
    report = scan_dataset(args.data)
    print(report.format_check())
    return EXIT_OK if report.ok else EXIT_SKIPPED


def _run_stats(args: argparse.Namespace) -> int:
    report = scan_dataset(args.data)
    print(json.dumps(report.info(), indent=1) if args.json else report.format_stats())
    return EXIT_OK


def _add_copy_cfg_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "name", metavar="NAME", help="a shipped YAML, e.g. smartcash_effb4_yolov5.yaml (a wrong one lists all)"
    )


def _run_copy_cfg(args: argparse.Namespace) -> int:
    """Copy a shipped YAML into the current folder, as ``yolo copy-cfg`` does Ultralytics' defaults; never overwrite."""
    copy = copy_shipped(args.name)
    use = "model" if (cfg_dir() / MODELS / copy.name).is_file() else "cfg"
    print(f"Wrote {copy}: edit it, then train with `yolo train {use}={copy.name} ...` from this folder")
    return EXIT_OK


COMMANDS: dict[str, Command] = {
    "check": Command(
        "verify a dataset as training does and list every problem by file; exit 1 when there is one",
        _add_dataset_argument,
        _run_check,
    ),
    "stats": Command(
        "images per split, instances per class and layer, backgrounds, box sizes, sidecar geometry",
        _add_stats_arguments,
        _run_stats,
    ),
    "copy-cfg": Command(
        "copy a shipped model YAML or training cfg into the current folder for editing (never overwrites a file)",
        _add_copy_cfg_arguments,
        _run_copy_cfg,
    ),
    "convert": Command(
        "convert a YOLO image dataset (jpg, png, ...) into SmartCash .npy arrays, labels and .meta.json sidecars",
        _add_convert_arguments,
        _run_convert,
    ),
    "evaluate": Command(
        "evaluate models over test-set scenarios (original, lighting, position) with Ultralytics' validator",
        add_evaluate_arguments,
        run_evaluate,
    ),
    "runs": Command(
        "list the checkpoints under a folder: backbone, epochs, best epoch, mAP, date, size",
        add_runs_arguments,
        run_runs,
    ),
}
"""Subcommand name -> :class:`Command`; a new tool is one more entry."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smartcash-ultra", description="SmartCash dataset, checkpoint and evaluation tools."
    )
    parser.add_argument("--version", action="version", version=f"smartcash-ultra {installed_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        command.add_arguments(subparsers.add_parser(name, help=command.help, description=command.help))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the subcommand ``argv`` names (default: the command line) and return its exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help / --version (0) or a usage error (2), already printed by argparse
        return e.code if isinstance(e.code, int) else EXIT_ERROR
    try:
        return COMMANDS[args.command].run(args)
    except (SmartCashError, OSError) as e:  # the errors whose cause is known (utils/errors.py): one line
        print(f"smartcash-ultra {args.command}: error: {summary(e)}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as e:  # a fault of the tool: exit 1 would read as "problems found", a traceback as the data's
        if args.command not in READERS:
            raise
        print(f"smartcash-ultra {args.command}: error: {args.data}: failed ({type(e).__name__}: {e})", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
