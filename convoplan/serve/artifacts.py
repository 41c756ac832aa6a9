"""What the server serves: trained artifacts named by one manifest, `serve.json`, in the artifacts folder.

    {
      "world": "convoplan.worlds.animals:animals_world",
      "arms": {"saql": {"dm": "dm/saql", "weight": 0.5},
               "supervised_rnn": {"dm": "dm/supervised_rnn", "weight": 0.5}},
      "control": "supervised_rnn",
      "lm": "lm", "nba": "nba", "labeller": null,
      "lm_provider": true
    }

- `world`: an import path to a function returning the `World` (providers, NLU lexicon, fusion) the bot runs in;
- `arms`: the live A/B arms, each a DM (a trained folder, a built-in name, or `pkg.module:Factory`) and a weight;
- `control`: the arm the A/B report compares the others with;
- `lm`, `nba`, `labeller`: the agent-assist models (docs/lm.md, docs/actions.md); any may be left out;
- `suggestions`: where agent-assist suggestions come from: "lm" (written), "exemplars" (retrieved: the past agent
  messages of the action whose contexts are nearest, from `exemplars` or `lm`'s exemplars/ index), or "both";
- `lm_provider`: add an LM to the bot's content providers (one candidate per action, `convoplan.lm.provider`):
  `true` for `lm`, or a folder of its own (a smaller LM: the provider writes inside every bot turn, a suggestion
  only when an agent asks);
- `knowledge`: the knowledge file a grounded LM reads (docs/lm.md, "Grounding"), and that every suggestion's claims
  are checked against (`ServeConfig.drop_unsupported` drops those it does not support); a grounded LM whose prompts
  carry exemplars reads its folder's exemplars/.

Folders are relative to the manifest. Loading uses the checkpoint readers only, never training code.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from annotated_types import Ge

from convoplan.actions.protocols import Labeller, NextActionModel
from convoplan.atomic import atomic_write
from convoplan.compose.loop import Bot, DialogueManager, Provider
from convoplan.configs import Config, config_from_dict
from convoplan.lm.grounding import grounding_config
from convoplan.lm.model import LanguageModel, Precision
from convoplan.lm.suggest import Sources, SuggestConfig, Suggester
from convoplan.schema import Turn
from convoplan.sim.arms import ANIMALS
from convoplan.sim.run import World

if TYPE_CHECKING:
    from convoplan.retrieval.exemplars import ExemplarIndex
    from convoplan.retrieval.knowledge import KnowledgeIndex

__all__ = ["Arm", "Artifacts", "Manifest", "write_manifest"]

MANIFEST = "serve.json"


@dataclass
class Arm(Config):
    dm: str
    """A trained DM folder (relative to the manifest), a built-in DM name, or 'pkg.module:Factory'."""
    weight: Annotated[float, Ge(0)] = 1.0
    """Share of users assigned to this arm (weights are normalised over the arms; finite, as every float field)."""


@dataclass
class Manifest(Config):
    arms: dict[str, Arm]
    """The bot's A/B arms by name."""
    world: str = ANIMALS
    """Import path of a function returning the World the bot runs in."""
    control: str | None = None
    """The arm others are compared with in `convoplan experiment report` (default: the first)."""
    lm: str | None = None
    """Action-directed LM folder (agent-assist suggestions; the bot's LM provider)."""
    nba: str | None = None
    """Next-best-action model folder (ranks the next actions for agent assist)."""
    labeller: str | None = None
    """Labeller folder (labels the agent messages of a history that carry no action)."""
    lm_provider: bool | str = False
    """Offer the bot one LM-written candidate per action besides the world's providers: true = from `lm`, or the
    folder of another LM (a smaller one that fits the per-turn latency)."""
    domain: str = "animals"
    """The `domain` of stored sessions."""
    suggestions: Sources = "lm"
    """Where agent-assist suggestions come from: "lm" (written), "exemplars" (past agent messages of the action
    whose contexts are nearest: no LM runs), "both" (the nearest past message first, then written ones)."""
    exemplars: str | None = None
    """The exemplar index folder for "exemplars" and "both" (`convoplan lm index`; default: `lm`'s exemplars/)."""
    knowledge: str | None = None
    """The knowledge file (docs/format.md) whose passages a grounded LM's prompts read (docs/lm.md, "Grounding"), and
    that every suggestion's claims are checked against."""
    assist_arms: dict[str, str] = field(default_factory=dict)
    """Agent-assist A/B: arm name -> LM folder writing that arm's suggestions (e.g. `lm` against a tuned one).
    Each agent (an assist session's `user_id`) gets one arm by a hash of its id, equal shares; the first arm is the
    control of `convoplan experiment report --assist`. Empty: every agent gets `lm`'s suggestions."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.arms:
            raise ValueError("the manifest names no arm")
        total = sum(arm.weight for arm in self.arms.values())  # each >= 0 and finite: Arm checks its own
        if not 0 < total < math.inf:  # all 0 would assign nobody; a sum that overflows, everybody to the last arm
            raise ValueError(f"arms: the weights must add up to a positive finite number, got {total}")
        if self.control is not None and self.control not in self.arms:
            raise ValueError(f"control {self.control!r} is not one of the arms ({', '.join(self.arms)})")
        if self.lm_provider is True and self.lm is None:
            raise ValueError("lm_provider true needs an lm (or name the provider's own LM folder)")
        if self.suggestions != "lm" and self.lm is None:
            raise ValueError(
                f"suggestions {self.suggestions!r} needs an lm (it plans the actions and knows their tags)"
            )
        if self.assist_arms and self.lm is None:
            raise ValueError("assist_arms needs an lm (the suggestions of requests without a session)")


def read_manifest(folder: str | Path) -> Manifest:
    """The manifest of an artifacts folder; ValueError naming the file and what is wrong."""
    path = Path(folder) / MANIFEST
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file (an artifacts folder holds a {MANIFEST}; see docs/serve.md)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: {error}") from None
    # Every field's type and range checked, each arm's too: a NaN weight (JSON's NaN and Infinity literals
    # parse) is refused here, naming the file and the field, rather than failing every new session.
    return config_from_dict(Manifest, raw, str(path))


def write_manifest(folder: str | Path, manifest: Manifest) -> Path:
    path = Path(folder) / MANIFEST
    with atomic_write(path) as stream:
        stream.write(json.dumps(asdict(manifest), indent=2) + "\n")
    return path


def _exemplars(
    lm: LanguageModel, folder: str, wanted: bool, where: Callable[[str, Exception], ValueError]
) -> ExemplarIndex | None:
    """The exemplar index in `folder` when `wanted` or the LM's grounded prompts carry exemplars; else None."""
    if not (wanted or grounding_config(lm.info).exemplars):
        return None
    from convoplan.retrieval.exemplars import load_exemplars

    try:
        return load_exemplars(folder)
    except ValueError as error:
        raise where("exemplars", error) from None


def _knowledge(
    path: str | None, lms: list[LanguageModel], where: Callable[[str, Exception], ValueError]
) -> KnowledgeIndex | None:
    """The knowledge file at `path`, indexed by the method of the LMs that read it (None without one)."""
    if path is None:
        return None
    from convoplan.retrieval.knowledge import DEFAULT_METHOD, KnowledgeIndex
    from convoplan.schema import FormatError

    readers = [grounding_config(lm.info) for lm in lms if grounding_config(lm.info).knowledge]
    try:
        return KnowledgeIndex.from_file(path, readers[0].method if readers else DEFAULT_METHOD)
    except (FormatError, OSError, UnicodeDecodeError, ValueError) as error:
        raise where("knowledge", error) from None


@dataclass
class Artifacts:
    """Everything loaded once at start-up and shared by every request."""

    manifest: Manifest
    world: World
    dms: dict[str, DialogueManager]
    suggester: Suggester | None = None
    """Agent assist: LM + next-action model + labeller; None without an LM."""
    extra_providers: list[Provider] = field(default_factory=list)
    assist: dict[str, Suggester] = field(default_factory=dict)
    """Agent-assist arms (serve.json `assist_arms`): each arm's suggester, with the same next-action model, labeller,
    exemplars and knowledge as `suggester`; empty without arms."""

    @classmethod
    def load(
        cls, folder: str | Path, suggest: SuggestConfig | None = None, precision: Precision = "fp32", replicas: int = 1
    ) -> Artifacts:
        """The manifest's world, arms and models (the LMs in `precision`, each running up to `replicas` generations at
        once where its engine needs that said: `load_model`); ValueError naming the manifest entry."""
        from convoplan.sim.arms import load_arm, load_world

        root = Path(folder)
        manifest = read_manifest(root)

        def resolve(spec: str) -> str:
            return str(root / spec) if (root / spec).is_dir() else spec

        def where(name: str, error: Exception) -> ValueError:
            return ValueError(f"{root / MANIFEST}: {name}: {error}")

        try:
            world = load_world(manifest.world)
        except (ValueError, TypeError) as error:
            raise where("world", error) from None
        dms: dict[str, DialogueManager] = {}
        for name, arm in manifest.arms.items():
            try:
                dms[name] = load_arm(resolve(arm.dm), world, random.Random(name))
            except (ValueError, ImportError, OSError) as error:
                raise where(f"arms.{name}", error) from None
        lm: LanguageModel | None = None
        labeller: Labeller | None = None
        nba: NextActionModel | None = None
        try:
            if manifest.lm is not None:
                from convoplan.lm.model import load_model

                lm = load_model(resolve(manifest.lm), precision, replicas)
            if manifest.nba is not None:
                from convoplan.actions.load import load_nba

                nba = load_nba(resolve(manifest.nba))
            if manifest.labeller is not None:
                from convoplan.actions.labeller import load_labeller

                labeller = load_labeller(resolve(manifest.labeller))
            provider_lm = lm
            if isinstance(manifest.lm_provider, str):
                from convoplan.lm.model import load_model

                provider_lm = load_model(resolve(manifest.lm_provider), precision, replicas)
        except (ValueError, OSError) as error:
            raise where("models", error) from None
        from convoplan.retrieval.exemplars import EXEMPLARS

        knowledge_file = manifest.knowledge
        if knowledge_file is not None and (root / knowledge_file).exists():  # relative to the manifest, as folders are
            knowledge_file = str(root / knowledge_file)
        knowledge = _knowledge(knowledge_file, [m for m in (lm, provider_lm) if m is not None], where)
        extra: list[Provider] = []
        if manifest.lm_provider and provider_lm is not None:
            from convoplan.lm.provider import LMProvider

            folder = str(manifest.lm if manifest.lm_provider is True else manifest.lm_provider)
            own = _exemplars(provider_lm, resolve(f"{folder}/{EXEMPLARS}"), False, where)
            try:
                extra.append(LMProvider(provider_lm, world.lexicon, knowledge=knowledge, exemplars=own))
            except ValueError as error:
                raise where("lm_provider", error) from None
        suggester = None
        if lm is not None and manifest.lm is not None:
            wanted = manifest.suggestions != "lm"
            index = _exemplars(lm, resolve(manifest.exemplars or f"{manifest.lm}/{EXEMPLARS}"), wanted, where)
            try:
                suggester = Suggester(
                    lm, labeller, nba, suggest, exemplars=index, sources=manifest.suggestions, knowledge=knowledge
                )
            except ValueError as error:
                raise where("lm", error) from None
        assist: dict[str, Suggester] = {}
        for name, folder in manifest.assist_arms.items():
            from convoplan.lm.model import load_model

            try:
                arm_lm = load_model(resolve(folder), precision, replicas)
                own = _exemplars(arm_lm, resolve(f"{folder}/{EXEMPLARS}"), manifest.suggestions != "lm", where)
                assist[name] = Suggester(
                    arm_lm, labeller, nba, suggest, exemplars=own, sources=manifest.suggestions, knowledge=knowledge
                )
            except (ValueError, OSError) as error:
                raise where(f"assist_arms.{name}", error) from None
        return cls(manifest, world, dms, suggester, extra, assist)

    @property
    def weights(self) -> Mapping[str, float]:
        return {name: arm.weight for name, arm in self.manifest.arms.items()}

    @property
    def control(self) -> str:
        return self.manifest.control or next(iter(self.manifest.arms))

    @property
    def assist_weights(self) -> Mapping[str, float]:
        """The agent-assist arms' shares (equal)."""
        return dict.fromkeys(self.assist, 1.0)

    def suggester_of(self, arm: str | None) -> Suggester | None:
        """The suggester of an assist session's arm; `suggester` for any other (or no) session."""
        return self.assist.get(arm or "", self.suggester)

    def warm_up(self) -> None:
        """Run every model once (a bot response per arm, a suggestion), so that the first request does not pay for
        loading the sentence encoder and the first forward passes."""
        for arm in self.dms:
            bot = self.new_bot(arm, "warm-up")
            bot.hear("hello")
            bot.respond()
        for suggester in [self.suggester, *self.assist.values()]:
            if suggester is not None:
                suggester.suggest([Turn(speaker="user", text="hello")], n=1)

    def new_bot(self, arm: str, session_id: str) -> Bot:
        """A bot for one session of `arm` (providers built per session, seeded by its id; no exploration)."""
        world = self.world
        rng = random.Random(session_id)
        providers = [*self.extra_providers, *world.providers(rng)]
        return Bot(providers, self.dms[arm], world.fuser, world.lexicon, world.entity, rng=rng)
