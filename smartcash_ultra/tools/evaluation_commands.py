"""The ``evaluate`` and ``runs`` subcommands of ``smartcash-ultra`` (their entries are in ``cli.COMMANDS``)."""

from __future__ import annotations

import argparse
import json
import sys

from smartcash_ultra.evaluation.evaluate import DEFAULT_SCENARIOS, evaluate
from smartcash_ultra.evaluation.runs import as_dicts, best_per_backbone, format_table, list_checkpoints

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", nargs="*", metavar="MODEL", help="checkpoint, export, run folder or glob")
    parser.add_argument("--data", required=True, help="data YAML (or dataset folder) of the split to evaluate")
    parser.add_argument("--split", default="test", choices=("test", "val", "train"))
    parser.add_argument(
        "--scenarios",
        default=",".join(DEFAULT_SCENARIOS),
        help="comma-separated built-in names (original, lighting, position) or scenario YAML files",
    )
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default=None, help="as in yolo val: cpu, 0, ...")
    parser.add_argument("--project", default="runs/evaluate")
    parser.add_argument("--name", default="eval")
    parser.add_argument("--cache", default=None, help="folder of the scenario sets (default: PROJECT/scenarios)")
    parser.add_argument("--examples", type=int, default=2, help="example images per scenario (0: none)")
    parser.add_argument("--no-latency", action="store_true", help="skip timing the models")
    parser.add_argument(
        "--best-per-backbone", metavar="DIR", help="add the best checkpoint of each backbone found under DIR"
    )


def run_evaluate(args: argparse.Namespace) -> int:
    """Evaluate; print the comparison table; 1 when a model failed, 130 when stopped (partial summary written)."""
    models = list(args.models)
    if args.best_per_backbone:
        chosen = best_per_backbone(list_checkpoints(args.best_per_backbone))
        for backbone, info in chosen.items():
            print(f"best of {backbone}: {info.path} (mAP50-95 {info.map50_95:.4f})")
        models += [info.path for info in chosen.values()]
    if not models:
        print("smartcash-ultra evaluate: error: give at least one MODEL or --best-per-backbone DIR", file=sys.stderr)
        return 2
    try:
        run = evaluate(
            models,
            args.data,
            split=args.split,
            scenarios=args.scenarios,
            imgsz=args.imgsz,
            batch=args.batch,
            device=args.device,
            project=args.project,
            name=args.name,
            cache=args.cache,
            examples=args.examples,
            latency=not args.no_latency,
        )
    except KeyboardInterrupt:
        print("smartcash-ultra evaluate: stopped; what was done is in the partial summary", file=sys.stderr)
        return EXIT_INTERRUPTED
    for info in run.models:
        if info.status != "ok":
            print(f"{info.path}: failed: {info.reason}", file=sys.stderr)
    print((run.save_dir / "report.md").read_text().split("## Per layer")[0].split("## Comparison")[-1].strip())
    print(f"Results in {run.save_dir}")
    return EXIT_OK if run.ok else EXIT_FAILED


def add_runs_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", nargs="?", default="runs", help="folder searched for .pt checkpoints (default: runs)")
    parser.add_argument("--json", action="store_true", help="print the list as JSON")


def run_runs(args: argparse.Namespace) -> int:
    """List the checkpoints under the folder; 1 when one cannot be read."""
    checkpoints = list_checkpoints(args.folder)
    print(json.dumps(as_dicts(checkpoints), indent=1) if args.json else format_table(checkpoints))
    return EXIT_FAILED if any(c.problem for c in checkpoints) else EXIT_OK
