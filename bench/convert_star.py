"""How long `convoplan data convert --corpus star` takes, beside the floor of parsing the same files.

The floor is json.load of every dialogue file and nothing else; the ratio says what building, validating-ready
dataclasses and writing canonical JSONL add on top. Both are timed in the same run, best of --repeats.

    .venv/bin/python bench/convert_star.py --src ../shared/data/star
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def best_of(repeats: int, run: Callable[[], None]) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", type=Path, default=Path("../shared/data/star"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    files = sorted((args.src / "dialogues").glob("*.json"))

    def parse_only() -> None:
        for path in files:
            json.loads(path.read_bytes())

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "star.jsonl"
        command = [
            sys.executable,
            "-m",
            "convoplan.cli",
            "data",
            "convert",
            "--corpus",
            "star",
            "--src",
            str(args.src),
            "--out",
            str(out),
        ]

        def convert() -> None:
            subprocess.run(command, check=True, capture_output=True)

        def read_back() -> None:
            subprocess.run(
                [sys.executable, "-m", "convoplan.cli", "data", "validate", str(out)], check=True, capture_output=True
            )

        floor = best_of(args.repeats, parse_only)
        converted = best_of(args.repeats, convert)
        validated = best_of(args.repeats, read_back)

    print(f"machine: {platform.processor() or platform.machine()}, {platform.python_version()}")
    print("| dialogues | json.load only (s) | convoplan data convert (s) | ratio | convoplan data validate (s) |")
    print("|---|---|---|---|---|")
    print(f"| {len(files):,} | {floor:.2f} | {converted:.2f} | {converted / floor:.1f}x | {validated:.2f} |")


if __name__ == "__main__":
    main()
