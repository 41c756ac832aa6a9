"""Write docs/config.md, the reference of every config: each field's default, valid range and meaning, generated
from the config dataclasses (a listing, not a benchmark: nothing is timed). tests/test_configs.py fails while the
committed file differs from what this writes.

    .venv/bin/python bench/config_reference.py            # rewrite docs/config.md
    .venv/bin/python bench/config_reference.py --check    # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
from pathlib import Path

from convoplan.configs import config_classes, reference

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "config.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only say whether the file is current (exit 1 if not)")
    args = parser.parse_args()
    text = reference(config_classes())
    if args.check:
        current = REFERENCE.exists() and REFERENCE.read_text() == text
        print(f"{REFERENCE}: {'current' if current else 'out of date: run bench/config_reference.py'}")
        raise SystemExit(0 if current else 1)
    REFERENCE.write_text(text)
    print(f"wrote {REFERENCE} ({len(config_classes())} configs)")


if __name__ == "__main__":
    main()
