"""The bad-input cases the test suite covers, by group, with counts (a listing, not a benchmark: nothing is timed).

Every test of a bad input refused where it enters carries `@pytest.mark.bad_input(group)`; this collects the suite
(nothing runs) and prints a markdown table of the groups (numbered as the items of the issue that asked for them:
"5" is issue 13's fifth, "27.3" issue 27's third),
the number of test cases (parametrised instances count one each; one case may check several inputs) and the tests.

    .venv/bin/python bench/bad_inputs.py
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import pytest


class _Groups:
    """A pytest plugin that files every collected item under its bad_input group."""

    def __init__(self) -> None:
        self.cases: dict[str, list[str]] = defaultdict(list)

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            marker = item.get_closest_marker("bad_input")
            if marker is not None:
                self.cases[str(marker.args[0])].append(item.nodeid)


def _number(group: str) -> tuple[int, ...]:
    """A group's number, "5" (issue 13's fifth item) or "27.3" (issue 27's third), as a sort key."""
    return tuple(int(part) for part in group.split()[0].split("."))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tests", default="tests", help="the test folder to collect")
    args = parser.parse_args()
    groups = _Groups()
    code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", args.tests], plugins=[groups])
    if code not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        raise SystemExit(f"collecting {args.tests} failed (pytest exit {int(code)})")
    print("\n| group | test cases | tests |\n|---|---:|---|")
    for group, cases in sorted(groups.cases.items(), key=lambda item: _number(item[0])):
        tests = sorted({case.split("[")[0].split("::")[-1] for case in cases})
        print(f"| {group} | {len(cases)} | {', '.join(f'`{t}`' for t in tests)} |")
    print(f"| **all** | **{sum(len(c) for c in groups.cases.values())}** | |")


if __name__ == "__main__":
    main()
