"""Several initialisations of one DM, the deployed one picked by its off-policy value (issue 17).

Training SAQL on one set of logs with different initialisation seeds gives DMs whose A/B results against the
heuristic differ as much as the effect sought. A team would train several and deploy the one `convoplan ope` values
highest on logs none of them trained on. This bench reads, per population and pipeline seed, the A/B summary that
`bench/dm_seeds.py` wrote (`SEEDS/<population>/seed<N>/ab.json`) and the OPE report of the candidates
(`OPE/<population>-seed<N>/report.json`, `convoplan ope ... --dm NAME=FOLDER`, names mapped to A/B arms with
`--arm NAME=ARM`), and prints each candidate's FQE value beside its A/B change against the heuristic, the pick,
and the pick's change over seeds.

    .venv/bin/python bench/dm_pick.py --seeds-dir runs/p17/seeds --ope-dir runs/p17/init-seeds-ope --seeds 0 1 2 \\
        --arm q.seed2=saql_mixed_resp_g0.95_2k --arm q.seed10=saql_2k_init10 ...
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from convoplan.sim.experiment import ABReport
from convoplan.sim.metrics import Comparison

METRICS = ("length", "positive_feedback")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds-dir", required=True, type=Path, help="bench/dm_seeds.py's --out")
    parser.add_argument("--ope-dir", required=True, type=Path, help="folders <population>-seed<N> of convoplan ope")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--populations", nargs="+", default=["default", "scholars"])
    parser.add_argument("--arm", action="append", default=[], help="OPE_NAME=AB_ARM[@SEEDS_DIR]")
    parser.add_argument("--against", default="heuristic")
    args = parser.parse_args()
    arms: dict[str, tuple[str, Path]] = {}
    for spec in args.arm:
        name, _, rest = spec.partition("=")
        arm, _, folder = rest.partition("@")
        arms[name] = (arm, Path(folder) if folder else args.seeds_dir)

    print(f"| population | seed | DM | FQE [95%] | length vs {args.against} | positive feedback vs {args.against} |")
    print("|---|---:|---|---:|---:|---:|")
    picks: dict[str, list[dict[str, Comparison | None]]] = {p: [] for p in args.populations}
    for population in args.populations:
        for seed in args.seeds:
            ranking = json.loads((args.ope_dir / f"{population}-seed{seed}" / "report.json").read_text())["ranking"]
            picked = False
            for row in ranking:  # best first
                arm, folder = arms[row["dm"]]
                fqe = row["estimates"]["fqe"]
                value = f"{fqe['value']:.3f} [{fqe['low']:.3f}, {fqe['high']:.3f}]"
                if arm == args.against:  # valued for reference, never picked
                    print(f"| {population} | {seed} | {row['dm']} (the control) | {value} | | |")
                    continue
                summary = json.loads((folder / population / f"seed{seed}" / "ab.json").read_text())
                changes = ABReport.from_dict(summary["reports"][args.against]).changes[arm]
                name = row["dm"] if picked else f"**{row['dm']}** (picked)"
                ab = " | ".join(c.paired() if (c := changes[m]) else "n/a" for m in METRICS)
                print(f"| {population} | {seed} | {name} | {value} | {ab} |")
                if not picked:
                    picks[population].append(changes)
                    picked = True

    print(f"\n| population | metric | the pick against {args.against}, mean ± sd over seeds | paired CI > 0 |")
    print("|---|---|---:|---:|")
    for population, chosen in picks.items():
        for metric in METRICS:
            values = [c.relative_change if (c := changes[metric]) else math.nan for changes in chosen]
            above = sum(c.paired_low > 0 for changes in chosen if (c := changes[metric]))
            spread = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
            print(
                f"| {population} | {metric.replace('_', ' ')} | {np.mean(values):+.1%} ± {spread:.1%} | "
                f"{above} of {len(chosen)} |"
            )


if __name__ == "__main__":
    main()
