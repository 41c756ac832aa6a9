"""Learned DMs over several pipeline seeds and both user populations (issue 17): each arm's effect as its mean and
spread over seeds (the variance of training), beside each seed's paired interval (the variance of users).

For every population and seed:

1. the RL paper's pipeline (`convoplan.sim.pipeline`, docs/dm.md): logs of the heuristic DM (epsilon-greedy), the
   supervised RNN DM trained on them, its own epsilon-greedy logs, SAQL trained on those, at the budget below;
2. SAQL variants (`--variant NAME=FIELD=VALUE[;FIELD=VALUE]`, fields of QConfig: the reward, the horizon gamma, ...)
   trained on the same second-round logs, or on the logs `logs=NAME[+NAME]` names (`logs=heuristic+supervised_rnn`:
   both rounds, the hand-written planner's too);
3. one A/B on evaluation users (drawn for evaluation: never the users of a collection round): the hand-written
   heuristic, the supervised RNN DM, SAQL and the variants all meet the same users; every arm is compared with the
   supervised RNN DM and with the heuristic, per arm (users resampled per arm) and paired (users resampled, each
   with both arms' conversations). With `--set rounds=N --rounds` the pipeline iterates offline RL and its
   promoted DM (`saql_iterated`) is an arm too. With `--transformer` the supervised transformer DM, trained on the
   first-round logs until its held-out rating error stops falling (`--set supervised_transformer.FIELD=VALUE`:
   its validation share, patience, packed input, ...), is an arm and a third control; the supervised RNN DM is then
   also trained on the same training conversations alone (`supervised_rnn_validation`, not an arm) so that both
   supervised DMs' errors on the same held-out conversations are reported. `--confirm ARM ...` then meets the
   heuristic and those arms with fresh users (`--confirm-users`, another evaluation stream): an arm picked on the
   first A/B's users is confirmed on users that played no part in picking it.

Then, per population, arm, control and metric: each seed's relative change with its paired interval, the mean and
standard deviation of the change over seeds, and in how many seeds the paired interval lies above zero. Everything
a seed computes is kept under OUT/<population>/seed<N>/ and reused by a rerun (delete a folder to recompute it).

    .venv/bin/python bench/dm_seeds.py --out runs/p17/seeds --seeds 0 1 2 --populations default scholars \\
        --variant "saql_reactions=reward.source=reactions" --variant "saql_g0.97=gamma=0.97"
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convoplan.compose.loop import DialogueManager
from convoplan.configs import apply_overrides
from convoplan.dm.checkpoint import load_network
from convoplan.dm.configs import QConfig
from convoplan.dm.train import prepare, train_q, train_supervised
from convoplan.dm.train_crossencoder import train_supervised_transformer
from convoplan.embed import SentenceEmbedder
from convoplan.progress import ProgressDisplay
from convoplan.schema import Conversation, read_jsonl, write_jsonl
from convoplan.sim.arms import load_arm, load_world
from convoplan.sim.experiment import ABReport, ab_report, run_ab
from convoplan.sim.pipeline import PipelineConfig, run_pipeline
from convoplan.sim.run import World

METRICS = ("length", "positive_feedback", "negative_feedback", "user_left", "mean_rating")
CONTROLS = ("supervised_rnn", "heuristic", "supervised_transformer")


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def pipeline_config(args: argparse.Namespace, seed: int) -> PipelineConfig:
    """The demo's budget (`convoplan demo`: batches of 8 conversations) unless --set says otherwise."""
    config = PipelineConfig(conversations=args.conversations, seed=seed, arms=("saql",))
    config.supervised.steps, config.supervised.batch_size = 200, 8
    config.q.steps, config.q.batch_size = 500, 8
    return apply_overrides(config, args.set)


def variant(folder: Path, name: str, overrides: list[str], config: PipelineConfig, embedder: SentenceEmbedder) -> Path:
    """SAQL with `overrides` on the pipeline's second-round logs (the supervised DM's) or those a `logs=A+B`
    override names, trained once."""
    path = folder / name
    if (path / "config.json").is_file():
        recorded = json.loads((path / "config.json").read_text())["training"].get("variant")
        if recorded == overrides:
            return path
        raise SystemExit(f"{path} was trained as {recorded}, not {overrides}: give the variant another name")
    source = next((f.removeprefix("logs=") for f in overrides if f.startswith("logs=")), "supervised_rnn")
    fields = [f for f in overrides if not f.startswith("logs=")]
    q = apply_overrides(replace(config.q, algorithm="saql", seed=config.seed), fields)
    _, space, _ = load_network(folder / "supervised_rnn")
    logs = [c for part in source.split("+") for c in read_jsonl(folder / "logs" / f"{part}.jsonl")]
    data = prepare(logs, embedder, space, q.reward)
    say(f"  training {name} ({', '.join(overrides)})")
    with ProgressDisplay(every=60) as progress:
        result = train_q(data, q, progress=progress)
    result.save(path, "saql", q, space, variant=overrides)
    return path


def supervised_controls(folder: Path, config: PipelineConfig, embedder: SentenceEmbedder) -> Path:
    """The supervised transformer DM on the first-round logs, stopped by its held-out error, and the supervised RNN
    DM trained with the same held-out conversations (for its error only); trained once."""
    path = folder / "supervised_transformer"
    if (path / "config.json").is_file():
        return path
    _, space, _ = load_network(folder / "supervised_rnn")
    data = prepare(read_jsonl(folder / "logs" / f"{config.first_dm}.jsonl"), embedder, space)
    held_out = replace(config.supervised, validation=config.supervised_transformer.validation)
    say(f"  training the supervised RNN DM with {held_out.validation.share:.0%} of the conversations held out")
    with ProgressDisplay(every=60) as progress:
        rnn = train_supervised(data, held_out, progress)
    note = "trained for its held-out error only"
    rnn.save(folder / "supervised_rnn_validation", "supervised_rnn", held_out, space, note=note)
    say("  training the supervised transformer DM until its held-out error stops falling")
    st = config.supervised_transformer
    with ProgressDisplay(every=60) as progress:  # a line a minute: loss and the last held-out RMSE
        result = train_supervised_transformer(data, st, progress)
    result.save(path, "supervised_transformer", st, space)
    return path


def iterated(args: argparse.Namespace) -> list[str]:
    """The iterated pipeline's arms (--rounds): each further round's SAQL, then the one promoted."""
    rounds = pipeline_config(args, 0).rounds if args.rounds else 1
    return [*(f"saql_round{n}" for n in range(2, rounds + 1)), *(["saql_iterated"] if args.rounds else [])]


def cached_ab(
    folder: Path, world: World, arms: dict[str, DialogueManager], users: int, seed: int, raters: int
) -> dict[str, list[Conversation]]:
    """Each arm's A/B conversations with `users` evaluation users of stream `seed`, simulated once and kept in
    folder/<arm>.jsonl: a cut-off run resumes."""
    logs = {}
    for name, dm in arms.items():
        path = folder / f"{name}.jsonl"
        if not path.is_file():
            with ProgressDisplay(every=60) as progress:  # an ensemble's 1,000 conversations take minutes
                conversations = run_ab(world, {name: dm}, name, users, seed, progress, raters)[name]
            write_jsonl(path, conversations)
        logs[name] = read_jsonl(path)
    return logs


def one_seed(args: argparse.Namespace, population: str, seed: int, variants: dict[str, list[str]]) -> dict[str, Any]:
    folder = Path(args.out) / population / f"seed{seed}"
    summary = folder / "ab.json"
    extra = [*iterated(args), *(["supervised_transformer"] if args.transformer else [])]
    wanted = {"heuristic", "supervised_rnn", "saql", *variants, *extra}
    if summary.is_file():
        done = dict(json.loads(summary.read_text()))
        if wanted <= {"supervised_rnn", *done["reports"]["supervised_rnn"]["arms"]}:
            return done
    world = load_world(simulator=population)
    embedder = SentenceEmbedder(cache_dir=Path(args.out) / "embeddings")
    config = pipeline_config(args, seed)
    start = time.perf_counter()
    say(f"{population}, seed {seed}: pipeline")
    checkpoints = run_pipeline(world, folder, config, embedder, report=say, resume=True)
    arms: dict[str, DialogueManager] = {"heuristic": load_arm("heuristic", world, random.Random(seed))}
    for name in ("supervised_rnn", "saql", "saql_iterated"):  # the last with --set rounds=N
        if name in checkpoints:
            arms[name] = load_arm(str(checkpoints[name]), world, embedder=embedder)
    for name in iterated(args)[:-1]:  # every round's DM, promoted or not
        arms[name] = load_arm(str(folder / name), world, embedder=embedder)
    for name, overrides in variants.items():
        arms[name] = load_arm(str(variant(folder, name, overrides, config, embedder)), world, embedder=embedder)
    if args.transformer:
        transformer = supervised_controls(folder, config, embedder)
        arms["supervised_transformer"] = load_arm(str(transformer), world, embedder=embedder)
    trained = time.perf_counter() - start
    say(f"{population}, seed {seed}: A/B of {len(arms)} arms x {args.users} evaluation users")
    logs = cached_ab(folder / "ab", world, arms, args.users, seed, args.raters)
    result = {
        "population": population,
        "seed": seed,
        "training_seconds": trained,
        "seconds": time.perf_counter() - start,
        "reports": {
            c: ab_report(logs, c, resamples=args.resamples, seed=seed).to_dict() for c in CONTROLS if c in logs
        },
        "validation": {
            name: json.loads((folder / name / "config.json").read_text())["training"]["validation"]
            for name in ("supervised_rnn_validation", "supervised_transformer")
            if (folder / name / "config.json").is_file()
        },
    }
    summary.write_text(json.dumps(result, indent=1))
    return result


def confirm(args: argparse.Namespace, population: str, seed: int) -> dict[str, Any]:
    """A second A/B of the heuristic and the `--confirm` arms on `--confirm-users` fresh evaluation users (the
    stream of seed 1000 + seed: none met the first A/B, which picked the arms), cached under ab-confirm-USERS/."""
    folder = Path(args.out) / population / f"seed{seed}"
    world = load_world(simulator=population)
    embedder = SentenceEmbedder(cache_dir=Path(args.out) / "embeddings")
    arms = {"heuristic": load_arm("heuristic", world, random.Random(seed))}
    for name in args.confirm:  # saql_iterated is the DM the gate promoted
        trained = json.loads((folder / "rounds.json").read_text())["promoted"] if name == "saql_iterated" else name
        arms[name] = load_arm(str(folder / trained), world, embedder=embedder)
    say(
        f"{population}, seed {seed}: confirmation A/B of {len(arms)} arms x {args.confirm_users} fresh evaluation users"
    )
    logs = cached_ab(
        folder / f"ab-confirm-{args.confirm_users}", world, arms, args.confirm_users, 1000 + seed, args.raters
    )
    report = ab_report(logs, "heuristic", resamples=args.resamples, seed=seed)
    return {"population": population, "seed": seed, "reports": {"heuristic": report.to_dict()}}


def aggregate(results: list[dict[str, Any]], population: str, arms: list[str]) -> list[str]:
    """Markdown rows: per arm, control and metric, each seed's change [paired interval], mean and sd over seeds."""
    mine = [r for r in results if r["population"] == population]
    lines = []
    for control in (c for c in CONTROLS if c in arms):
        for arm in (a for a in arms if a != control):
            for metric in METRICS:
                cells, changes, above = [], [], 0
                for r in mine:
                    c = ABReport.from_dict(r["reports"][control]).changes[arm].get(metric)
                    if c is None or math.isnan(c.relative_change):
                        cells.append("n/a")
                        continue
                    changes.append(c.relative_change)
                    above += c.paired_low > 0  # False where there is no paired interval (NaN)
                    cells.append(c.paired())
                spread = float(np.std(changes, ddof=1)) if len(changes) > 1 else float("nan")
                mean = float(np.mean(changes)) if changes else float("nan")
                lines.append(
                    f"| {arm} | {control} | {metric.replace('_', ' ')} | "
                    + " | ".join(cells)
                    + f" | {mean:+.1%} ± {spread:.1%} | {above} of {len(mine)} |"
                )
    return lines


def gate_rows(args: argparse.Namespace, results: list[dict[str, Any]]) -> list[str]:
    """Markdown rows: each promotion decision of the iterated pipeline (rounds.json: FQE values with intervals) beside
    what the A/B then showed, the candidate against the DM it was judged against (paired, the same users)."""
    lines = []
    for r in results:
        folder = Path(args.out) / r["population"] / f"seed{r['seed']}"
        for decision in json.loads((folder / "rounds.json").read_text())["rounds"]:
            new, old = decision["candidate"], decision["against"]
            logs = {name: read_jsonl(folder / "ab" / f"{name}.jsonl") for name in (old, new)}
            changes = ab_report(logs, old, resamples=args.resamples, seed=r["seed"]).changes[new]
            values = decision["values"]
            cells = [f"{values[n]['value']:.3f} [{values[n]['low']:.3f}, {values[n]['high']:.3f}]" for n in (new, old)]
            ab = [c.paired() if c is not None else "n/a" for c in (changes["length"], changes["positive_feedback"])]
            verdict = "promoted" if decision["promoted"] else "kept " + old
            row = [r["population"], str(r["seed"]), new, old, *cells, verdict, *ab]
            lines.append("| " + " | ".join(row) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--populations", nargs="+", default=["default", "scholars"])
    parser.add_argument("--conversations", type=int, default=300, help="per collection round")
    parser.add_argument("--users", type=int, default=300, help="evaluation users per arm")
    parser.add_argument("--raters", type=int, default=3)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--variant", action="append", default=[], help="NAME=FIELD=VALUE[;FIELD=VALUE] (QConfig)")
    parser.add_argument("--set", action="append", default=[], help="FIELD=VALUE of PipelineConfig")
    parser.add_argument("--rounds", action="store_true", help="the pipeline iterates (--set rounds=N)")
    parser.add_argument("--transformer", action="store_true", help="the converged supervised transformer control")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--confirm", nargs="+", default=[], help="arms for a second A/B against the heuristic")
    parser.add_argument("--confirm-users", type=int, default=1000, help="fresh evaluation users per arm and seed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    variants = {}
    for spec in args.variant:
        name, _, fields = spec.partition("=")
        variants[name] = [f for f in fields.split(";") if f]
    fields = [f for fields in variants.values() for f in fields if not f.startswith("logs=")]
    apply_overrides(QConfig(), fields)  # a bad field fails now
    results = [one_seed(args, p, s, variants) for p in args.populations for s in args.seeds]

    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, Python "
        f"{platform.python_version()}, torch {torch.__version__} ({args.threads} thread(s)); "
        f"{time.strftime('%Y-%m-%d')}; pipeline + A/B per seed: "
        + ", ".join(f"{r['population']} {r['seed']}: {r['seconds']:.0f} s" for r in results)
    )
    seeds = [f"seed {s} [paired 95%]" for s in args.seeds]
    for population in args.populations:
        print(f"\n### {population} users ({args.users} evaluation users per arm and seed)\n")
        print("| arm | against | metric | " + " | ".join(seeds) + " | mean ± sd over seeds | paired CI > 0 |")
        print("|---|---|---|" + "---:|" * (len(seeds) + 2))
        transformer = ["supervised_transformer"] if args.transformer else []
        arms = ["heuristic", "supervised_rnn", *transformer, "saql", *iterated(args), *variants]
        print("\n".join(aggregate(results, population, arms)))
    for population in args.populations if args.confirm else []:
        confirmed = [confirm(args, population, s) for s in args.seeds]
        print(f"\n### {population} users, confirmation: {args.confirm_users} fresh evaluation users per arm and seed\n")
        print("| arm | against | metric | " + " | ".join(seeds) + " | mean ± sd over seeds | paired CI > 0 |")
        print("|---|---|---|" + "---:|" * (len(seeds) + 2))
        print("\n".join(aggregate(confirmed, population, ["heuristic", *args.confirm])))
    if args.rounds:
        print("\n### Promotion decisions (FQE on the round's logs) against the A/B: the candidate vs the DM it met\n")
        print(
            "| population | seed | candidate | against | FQE, candidate | FQE, against | decision | "
            "length [paired 95%] | positive feedback [paired 95%] |"
        )
        print("|---|---:|---|---|---:|---:|---|---:|---:|")
        print("\n".join(gate_rows(args, results)))
    if args.transformer:
        print("\n### The supervised DMs' rating error (RMSE) on the same held-out conversations\n")
        print("| population | seed | supervised RNN | supervised transformer | transformer: steps run (best at) |")
        print("|---|---:|---:|---:|---|")
        for r in results:
            rnn, st = r["validation"]["supervised_rnn_validation"], r["validation"]["supervised_transformer"]
            last = st["rmse"][-1][0] if st["rmse"] else 0
            print(
                f"| {r['population']} | {r['seed']} | {rnn['final_rmse']:.3f} | {st['final_rmse']:.3f} | "
                f"{last} ({st['best_step']}) |"
            )


if __name__ == "__main__":
    main()
