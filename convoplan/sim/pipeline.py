"""Data collection and training as in the RL paper (sec. 4.5): logs from a first DM, a supervised DM trained on
them, logs from that supervised DM, and the RL DMs trained on those.

    first DM (heuristic, epsilon-greedy) --logs--> supervised RNN DM --logs (epsilon-greedy)--> SAQL, CAQL,
                                                                                                 SAQL+CQL, CAQL+CQL

The CQL variants are warm-started from their unregularised counterparts and use the supervised DM as behaviour
policy. Every artifact lands in one folder: logs/*.jsonl and one checkpoint folder per DM.

With `rounds` > 1 the offline RL iterates (batch RL with a deployment gate, as a team would run it): each further
round collects logs with the DM promoted so far (epsilon-greedy, propensities logged), trains SAQL on all logs so
far (warm-started from it), and promotes the new DM only if the lower bound of its off-policy value interval (FQE
with bootstrap refits, `convoplan.ope.evaluate_policies`, on those logs) beats the promoted DM's. The promoted DM
is `saql_iterated`; rounds.json records every decision.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

from annotated_types import Ge, Interval

from convoplan.atomic import atomic_write_bytes
from convoplan.compose.loop import ComposerConfig
from convoplan.configs import Config
from convoplan.dm.checkpoint import RNNPolicy, load_network, load_policy
from convoplan.dm.configs import QConfig, SupervisedConfig
from convoplan.dm.crossencoder import CrossEncoder, CrossEncoderPolicy
from convoplan.dm.networks import QModel
from convoplan.dm.train import Dataset, prepare, train_q, train_supervised
from convoplan.dm.train_crossencoder import (
    E2EConfig,
    SupervisedTransformerConfig,
    train_e2e,
    train_supervised_transformer,
)
from convoplan.embed import SentenceEmbedder, default_cache_dir
from convoplan.ope import GreedyPolicy, OPEConfig, encoded_steps, evaluate_policies, policy_probabilities
from convoplan.progress import Progress, renamed
from convoplan.schema import Conversation, read_jsonl, write_jsonl
from convoplan.sim.arms import load_arm
from convoplan.sim.run import SimulationConfig, World, simulate

__all__ = ["PipelineConfig", "run_pipeline"]

RL_ARMS = ("saql", "caql", "saql_cql", "caql_cql")


@dataclass
class PipelineConfig(Config):
    first_dm: str = "heuristic"
    """The DM that collects the first logs (a built-in name or an import path)."""
    conversations: Annotated[int, Ge(2)] = 400
    """Simulated conversations per collection round."""
    epsilon: Annotated[float, Interval(ge=0, le=1)] = 0.2
    """Exploration of both collection rounds (propensities are logged)."""
    raters: Annotated[int, Ge(1)] = 3
    """Raters per conversation (the supervised DM regresses their ratings)."""
    max_turns: Annotated[int, Ge(1)] = 30
    """Bot responses after which a simulated conversation is cut off."""
    seed: Annotated[int, Ge(0)] = 0
    """Seed of initialisation and batch sampling."""
    supervised: SupervisedConfig = field(default_factory=SupervisedConfig)
    q: QConfig = field(default_factory=QConfig)
    """Settings shared by the RL DMs (the algorithm and CQL weight are set per arm)."""
    cql_alpha: Annotated[float, Ge(0)] = 1.0
    """CQL weight of the regularised variants."""
    cql_steps: Annotated[int, Ge(1)] = 500
    """Optimiser steps of the warm-started CQL variants."""
    arms: tuple[str, ...] = RL_ARMS
    """Which RL DMs to train."""
    transformers: bool = False
    """Also train the cross-encoder DMs: the supervised transformer (on the first logs) and E2E (on the second)."""
    supervised_transformer: SupervisedTransformerConfig = field(default_factory=SupervisedTransformerConfig)
    e2e: E2EConfig = field(default_factory=E2EConfig)
    rounds: Annotated[int, Ge(1)] = 1
    """Rounds of offline RL (1: the paper's); each further one collects with the promoted DM, trains SAQL on all
    logs so far and promotes it if its off-policy lower bound beats the promoted DM's (needs "saql" in arms)."""
    promotion: OPEConfig = field(default_factory=lambda: OPEConfig(estimators=("fqe",)))
    """How a round's DM is judged: the first estimator's interval (its gamma and reward: those of `q`)."""


Report = Callable[[str], None]


def _simulate(
    world: World, dm_spec: Any, name: str, config: PipelineConfig, seed: int, progress: Progress | None
) -> list[Conversation]:
    sim = SimulationConfig(
        conversations=config.conversations,
        raters=config.raters,
        seed=seed,
        max_turns=config.max_turns,
        composer=ComposerConfig(epsilon=config.epsilon),
    )
    return list(simulate(world, dm_spec, sim, name, progress))


def run_pipeline(
    world: World,
    out: str | Path,
    config: PipelineConfig,
    embedder: SentenceEmbedder | None = None,
    report: Report | None = None,
    progress: Progress | None = None,
    resume: bool = False,
) -> dict[str, Path]:
    """Run the whole pipeline; return the checkpoint folder of every trained DM by name.

    With `resume`, logs and checkpoints already in `out` (from a run with the same config that was cut off) are
    reused, and the run goes on from the first stage not finished. Every stage is seeded, so the result is the one
    an uninterrupted run gives.
    """
    out = Path(out)
    embedder = embedder or SentenceEmbedder(cache_dir=default_cache_dir())
    say = report or (lambda message: None)
    checkpoints: dict[str, Path] = {}

    def tracking(name: str) -> Progress | None:
        return renamed(progress, f"training {name}")

    def collect(name: str, dm: Any, seed: int) -> list[Conversation]:
        path = out / "logs" / f"{name}.jsonl"
        if resume and path.is_file():
            say(f"reusing {path}")
            return read_jsonl(path)
        say(f"collecting {config.conversations} conversations with the {name} DM")
        logs = _simulate(world, dm, name, config, seed, progress)
        write_jsonl(path, logs)
        return logs

    def finished(name: str) -> bool:
        """With `resume`, a DM whose checkpoint is complete is loaded rather than trained again."""
        if resume and (out / name / "config.json").is_file():
            say(f"reusing {out / name}")
            checkpoints[name] = out / name
            return True
        return False

    first = collect(config.first_dm, load_arm(config.first_dm, world, random.Random(config.seed)), config.seed)
    first_data = prepare(first, embedder)

    supervised_transformer: CrossEncoder | None = None
    if config.transformers:
        if finished("supervised_transformer"):
            reloaded = load_policy(out / "supervised_transformer")
            assert isinstance(reloaded, CrossEncoderPolicy)
            supervised_transformer = reloaded.model.train()
        else:
            say("training the supervised transformer DM")
            track = tracking("supervised_transformer")
            pairs = train_supervised_transformer(first_data, config.supervised_transformer, track)
            supervised_transformer = pairs.model
            checkpoints["supervised_transformer"] = pairs.save(
                out / "supervised_transformer",
                "supervised_transformer",
                config.supervised_transformer,
                first_data.table.space,
                logs=f"logs/{config.first_dm}.jsonl",
            )

    if finished("supervised_rnn"):
        supervised = load_network(out / "supervised_rnn")[0]
    else:
        say("training the supervised RNN DM")
        rated = train_supervised(first_data, config.supervised, tracking("supervised_rnn"))
        supervised = rated.network
        checkpoints["supervised_rnn"] = rated.save(
            out / "supervised_rnn",
            "supervised_rnn",
            config.supervised,
            first_data.table.space,
            logs=f"logs/{config.first_dm}.jsonl",
        )

    second = collect("supervised_rnn", RNNPolicy(supervised, first_data.table.space, embedder), config.seed + 1)
    data = prepare(second, embedder, first_data.table.space, config.q.reward)  # the Q-learners' reward

    trained: dict[str, QModel] = {}
    for arm in config.arms:
        algorithm, regularised = arm.removesuffix("_cql"), arm.endswith("_cql")
        if algorithm not in ("saql", "caql"):
            raise ValueError(f"unknown RL DM {arm!r}: expected one of {', '.join(RL_ARMS)}")
        if finished(arm):
            trained[arm] = load_network(out / arm)[0]
            continue
        say(f"training {arm}")
        q_config = replace(config.q, algorithm=algorithm, cql_alpha=config.cql_alpha if regularised else 0.0)  # type: ignore[arg-type]
        init = None
        if regularised:
            q_config = replace(q_config, steps=config.cql_steps)
            if algorithm not in trained:
                plain = replace(q_config, cql_alpha=0.0, steps=config.q.steps)
                trained[algorithm] = train_q(data, plain, progress=tracking(algorithm)).network
            init = trained[algorithm]
        result = train_q(data, q_config, supervised=supervised, init=init, progress=tracking(arm))
        trained[arm] = result.network
        checkpoints[arm] = result.save(out / arm, arm, q_config, data.table.space, logs="logs/supervised_rnn.jsonl")

    if config.rounds > 1:
        if "saql" not in trained:
            raise ValueError("rounds > 1 iterate SAQL: keep saql in arms")
        logs = [*first, *second]
        promoted, rounds = ("saql", trained["saql"]), []
        record_path = out / "rounds.json"
        recorded = {  # a resumed run keeps the gate's decisions on DMs it reuses rather than refitting FQE
            d["candidate"]: d
            for d in (json.loads(record_path.read_text())["rounds"] if resume and record_path.is_file() else [])
        }
        for number in range(2, config.rounds + 1):
            name = f"saql_round{number}"
            policy = RNNPolicy(promoted[1], first_data.table.space, embedder)
            logs += collect(name, policy, config.seed + number)
            data = prepare(logs, embedder, first_data.table.space, config.q.reward)
            reused = finished(name)
            if reused:
                candidate = load_network(out / name)[0]
            else:
                say(f"training {name} on {len(logs)} conversations, warm-started from {promoted[0]}")
                q_config = replace(config.q, algorithm="saql", cql_alpha=0.0)
                result = train_q(data, q_config, init=promoted[1], progress=tracking(name))
                candidate = result.network
                checkpoints[name] = result.save(out / name, name, q_config, data.table.space, logs="logs/*.jsonl")
            decision = recorded.get(name, {})
            if reused and decision.get("against") == promoted[0]:
                say(f"{name}: reusing the decision in {record_path}: {decision['summary']}")
            else:
                decision = _promotion(data, supervised, {promoted[0]: promoted[1], name: candidate}, config)
                say(f"{name}: {decision['summary']}")
            rounds.append(decision)
            if decision["promoted"]:
                promoted = (name, candidate)
            record = {"promoted": promoted[0], "rounds": rounds}  # after every round: a cut-off run keeps it
            atomic_write_bytes(record_path, json.dumps(record, indent=1).encode())
        checkpoints["saql_iterated"] = out / promoted[0]

    if supervised_transformer is not None and not finished("e2e"):
        say("training e2e")
        # warm-started from the supervised transformer, so it reads its inputs the same way
        e2e_config = replace(config.e2e, model=config.supervised_transformer.model)
        e2e = train_e2e(data, e2e_config, init=supervised_transformer, progress=tracking("e2e"))
        checkpoints["e2e"] = e2e.save(
            out / "e2e", "e2e", e2e_config, data.table.space, logs="logs/supervised_rnn.jsonl"
        )
    return checkpoints


def _promotion(data: Dataset, supervised: QModel, dms: dict[str, QModel], config: PipelineConfig) -> dict[str, Any]:
    """Off-policy values of the promoted DM and a round's new one (the last of `dms`) on the round's data; the
    new one is promoted if its interval's lower bound is the higher.

    The estimators discount every composition step; a horizon counted in responses (`q.discount="response"`)
    becomes the per-step gamma with the same mean horizon on these logs, gamma ** (responses / steps)."""
    gamma = config.q.gamma
    if config.q.discount == "response":
        gamma **= float(data.table.step_closes.sum()) / max(data.table.steps, 1)
    ope = replace(config.promotion, gamma=gamma, reward=config.q.reward, seed=config.seed)
    steps = encoded_steps(data.table, data.embeddings, supervised.state, ope)
    targets = {name: policy_probabilities(data.table, data.embeddings, GreedyPolicy(q)) for name, q in dms.items()}
    report = evaluate_policies(steps, targets, ope)
    estimator = report.estimators[0]
    (old, current), (new, candidate) = [(r.name, r.estimates[estimator]) for r in report.rows]
    promoted = candidate.low > current.low
    return {
        "candidate": new,
        "against": old,
        "estimator": estimator,
        "gamma": gamma,
        "values": {r.name: asdict(r.estimates[estimator]) for r in report.rows},
        "promoted": promoted,
        "summary": f"{estimator} {candidate.value:.3f} [{candidate.low:.3f}, {candidate.high:.3f}] against "
        f"{old} {current.value:.3f} [{current.low:.3f}, {current.high:.3f}]: "
        + ("promoted" if promoted else f"{old} stays"),
    }
