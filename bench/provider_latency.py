"""Per-turn latency of the bot with an LM content provider, for each LM a serving artifacts folder could give it
(`convoplan demo` writes one: `lm`, the agent-assist LM, and `lm-provider`, the provider's own): the same arm, the
same user messages and the same sessions, one bot turn (hear + respond, every composition step's candidates
written) timed at a time, and a baseline without the LM provider; with `--int8`, each LM also with int8 linear layers;
with `--ctranslate2`, each LM also exported for CTranslate2 (float32 and int8_float32, into a temp folder).

    .venv/bin/python bench/provider_latency.py --artifacts runs/demo/artifacts --turns 12 --int8 --ctranslate2
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from convoplan.compose.loop import DialogueState
from convoplan.lm.grounding import grounding_config
from convoplan.lm.model import Precision, export_model, load_model
from convoplan.lm.provider import LMProvider
from convoplan.retrieval.exemplars import EXEMPLARS, load_exemplars
from convoplan.schema import Candidate
from convoplan.serve.artifacts import Artifacts

MESSAGES = ["hi! tell me about lions", "what do they eat?", "how big are they?", "what about penguins?"]


class TimedProvider(LMProvider):
    """The LM provider, keeping the time its proposals take (where a bot turn's time goes)."""

    seconds = 0.0

    def propose(self, state: DialogueState) -> list[Candidate]:
        started = time.perf_counter()
        try:
            return super().propose(state)
        finally:
            self.seconds += time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", default="runs/demo/artifacts")
    parser.add_argument("--lm", action="append", default=None, help="LM folders to compare (default: lm, lm-provider)")
    parser.add_argument("--turns", type=int, default=12, help="bot turns timed per LM")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--int8", action="store_true", help="also each LM with int8 linear layers")
    parser.add_argument("--ctranslate2", action="store_true", help="also each LM exported for CTranslate2")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    artifacts = Artifacts.load(args.artifacts)
    arm = artifacts.control
    folders = args.lm or [f"{args.artifacts}/lm", f"{args.artifacts}/lm-provider"]
    print(
        "| provider LM | parameters | turns | median s per turn | p90 s | composition steps per turn "
        "| LM candidates per turn | share of the time in the LM provider |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    runs: list[tuple[str | None, Precision]] = [(None, "fp32")]
    exports = tempfile.TemporaryDirectory(prefix="provider-latency-")
    for number, folder in enumerate(folders):
        runs.append((folder, "fp32"))
        if args.int8:
            runs.append((folder, "int8"))
        for quantization in ("float32", "int8_float32") if args.ctranslate2 else ():
            runs.append(
                (str(export_model(folder, Path(exports.name) / f"{number}-{quantization}", quantization)), "fp32")
            )
    # A grounded LM reads what the served one reads: the artifacts' knowledge file, its folder's exemplars.
    knowledge = artifacts.suggester.knowledge if artifacts.suggester is not None else None

    def provider(folder: str, precision: Precision) -> TimedProvider:
        lm = load_model(folder, precision)
        exemplars = load_exemplars(Path(folder) / EXEMPLARS) if grounding_config(lm.info).exemplars else None
        return TimedProvider(lm, artifacts.world.lexicon, knowledge=knowledge, exemplars=exemplars)

    parameters = 0
    for folder, precision in runs:
        providers = [] if folder is None else [provider(folder, precision)]
        artifacts.extra_providers = list(providers)
        times, offered, steps, in_lm = [], 0, 0, 0.0
        for turn in range(args.turns + 1):  # the first turn of all warms up (not timed)
            if turn % len(MESSAGES) == 0:
                bot = artifacts.new_bot(arm, f"latency-{turn}")
            before = providers[0].seconds if providers else 0.0
            started = time.perf_counter()
            bot.hear(MESSAGES[turn % len(MESSAGES)])
            response = bot.respond()
            if turn:
                times.append(time.perf_counter() - started)
                offered += sum(c.provider == "lm" for step in response.steps for c in step.candidates)
                steps += len(response.steps)
                in_lm += (providers[0].seconds if providers else 0.0) - before
        lm = providers[0].lm if providers else None
        if lm is not None and lm.network is not None and precision == "fp32":  # (int8 layers: packed weights)
            parameters = sum(p.numel() for p in lm.model.parameters())
        name = "no LM provider" if lm is None else f"{folder} ({precision}, {lm.engine})"
        if lm is not None and lm.generator is not None:
            name = f"{lm.info['engine']['source']} ({lm.engine} {lm.info['engine']['quantization']})"
        quantiles = statistics.quantiles(times, n=10)
        print(
            f"| {name} | {parameters:,} | {len(times)} | {statistics.median(times):.3f} | {quantiles[-1]:.3f} "
            f"| {steps / len(times):.1f} | {offered / len(times):.1f} | {in_lm / sum(times):.0%} |"
        )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
        f"torch {torch.__version__}, {args.threads} thread(s); arm {arm}"
    )
    exports.cleanup()


if __name__ == "__main__":
    main()
