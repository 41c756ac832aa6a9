"""Labelling as a Ray Data job, for corpora beyond one machine (`convoplan label apply --engine ray`).

Conversations travel as canonical JSON lines; a pool of actors, each holding one loaded labeller (encoder and
head), labels batches of them with the same `apply_labels` as the local engine, so the labels are the same. Order
is preserved, so the output lines match the input lines. Needs the optional extra: `pip install 'convoplan[ray]'`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from convoplan.schema import Conversation, InvalidLine, parse_line, to_json

__all__ = ["apply_labels_ray"]


class _LabelBatch:
    """A Ray actor: loads the labeller once, then labels every batch it is handed."""

    def __init__(self, folder: str) -> None:
        from convoplan.actions.labeller import load_labeller

        self.labeller = load_labeller(folder)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from convoplan.actions.labeller import apply_labels

        labelled, _ = apply_labels([_parse(str(line)) for line in batch["line"]], self.labeller)
        # Per conversation, what apply_labels counts: turns this labeller gave an action (human labels have no source).
        counts = [
            sum(t.action is not None and t.action_source == self.labeller.version for t in c.turns) for c in labelled
        ]
        return {"line": np.array([to_json(c) for c in labelled], dtype=object), "labelled": np.array(counts)}


def apply_labels_ray(
    conversations: Sequence[Conversation],
    folder: str | Path,
    batch_size: int = 64,
    address: str | None = None,
    cpus: int | None = None,
    actors: int = 2,
) -> tuple[list[Conversation], int]:
    """`apply_labels` with `actors` labeller replicas on a Ray cluster (a local one unless `address` is given)."""
    try:
        import ray
    except ImportError:
        raise ImportError("--engine ray needs Ray: pip install 'convoplan[ray]'") from None
    from convoplan.actions.labeller import FORMAT
    from convoplan.checkpoint import read_config

    read_config(folder, FORMAT, "labeller")  # fail here, with a clear line, rather than inside an actor
    if not ray.is_initialized():
        ray.init(
            address=address,
            num_cpus=cpus,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,  # our progress and errors are what the user reads, not Ray's INFO lines
        )
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    dataset = ray.data.from_items([{"line": to_json(c)} for c in conversations])
    rows: list[dict[str, Any]] = dataset.map_batches(
        _LabelBatch,
        fn_constructor_args=(str(Path(folder).resolve()),),
        batch_size=batch_size,
        concurrency=actors,
        num_cpus=1,
    ).take_all()
    labelled = [_parse(str(row["line"])) for row in rows]
    return labelled, sum(int(row["labelled"]) for row in rows)


def _parse(line: str) -> Conversation:
    parsed = parse_line(line)
    if isinstance(parsed, InvalidLine):  # our own output: only a bug gets here
        raise ValueError(f"labelled conversation failed validation: {parsed}")
    return parsed
