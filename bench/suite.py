"""The backbone benchmark suite in one command: training throughput, inference latency, accuracy for equal budget.

Runs ``bench/throughput.py``, ``bench/latency.py`` and ``bench/accuracy.py`` one after the other, never at once (a
part's timings must not see another part's load), each in a fresh interpreter. Each writes
``bench/results/<part>.json`` and ``docs/img/<part>.png``; the suite then prints their tables and writes
``bench/results/suite.json`` (wall time of each part and in all, load averages, commands).

    python bench/suite.py                        # the recorded run: 16 min on 2 shared CPU cores
    python bench/suite.py --quick                # smoke run (CI): tiny sizes, one interpreter, under a minute
    python bench/suite.py --device cuda --half   # on a GPU: AMP training steps, fp16 inference, training on the GPU
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from benchlib import add_output_args, load_average, machine, output_paths, write_json

PARTS = ("throughput", "latency", "accuracy")


def part_args(part: str, args: argparse.Namespace) -> list[str]:
    """Return the command-line arguments the suite passes to one part."""
    argv = ["--quick"] if args.quick else []
    if args.device != "cpu":
        argv += ["--device", args.device]
        if args.half and part == "latency":
            argv.append("--half")
    for flag, value in (("--results-dir", args.results_dir), ("--charts-dir", args.charts_dir)):
        if value:
            argv += [flag, str(value)]
    if args.workdir:
        argv += ["--workdir", str(args.workdir / part)]
    return argv


def run_part(part: str, argv: list[str], in_process: bool) -> None:
    """Run one part: in a fresh interpreter, or (``--quick``) in this one, sparing the imports."""
    if in_process:
        module = __import__(part)
        module.main(argv)
        return
    subprocess.run([sys.executable, str(Path(__file__).with_name(f"{part}.py")), *argv], check=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run of every part, in this interpreter")
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--half", action="store_true", help="latency in fp16 (with --device cuda)")
    add_output_args(p, "suite")
    args = p.parse_args(argv)
    if args.half and args.device != "cuda":
        p.error("--half needs --device cuda")
    out_json, _ = output_paths(args.name, args)
    started, load_before = time.perf_counter(), load_average()
    parts = {}
    for part in args.parts:
        part_argv = part_args(part, args)
        t = time.perf_counter()
        print(f"\n=== {part}: python bench/{part}.py {' '.join(part_argv)}", flush=True)
        run_part(part, part_argv, in_process=args.quick)
        parts[part] = {"command": f"python bench/{part}.py {' '.join(part_argv)}".strip()}
        parts[part]["wall_s"] = round(time.perf_counter() - t, 1)
        parts[part]["load_average_after"] = load_average()
    total = time.perf_counter() - started

    print("\n" + "=" * 100)
    for part in args.parts:
        result = json.loads(output_paths(part, args)[0].read_text())
        print(f"\n## {part} ({result['wall_s']:.0f} s, {result.get('device', '')})\n")
        print("\n".join(result["markdown"]))
    document = {
        "command": " ".join(["python bench/suite.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "load_average_before_after": [load_before, load_average()],
        "wall_s": round(total, 1),
        "parts": parts,
    }
    write_json(out_json, document)
    times = ", ".join(f"{k} {v['wall_s']:.0f} s" for k, v in parts.items())
    print(f"\nsuite: {total:.0f} s in all ({times}); ", end="")
    print(f"load average before/after: {load_before} / {document['load_average_before_after'][1]}")
    print(f"written {out_json}")


if __name__ == "__main__":
    main()
