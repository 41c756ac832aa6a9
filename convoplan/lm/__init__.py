"""The action-directed language model: the inline-action text format (`text`), its tokenizers (`tokenizer`), the
model folder (`model`), packed training data (`data`) and training with resumable checkpoints (`train`).

Only the text format is imported here, so reading and rendering conversations does not load torch.
"""

from convoplan.lm.text import keep_recent, parse, render

__all__ = ["keep_recent", "parse", "render"]
