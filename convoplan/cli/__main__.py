"""`python -m convoplan.cli` (and `torchrun -m convoplan.cli`)."""

from convoplan.cli import app

app()
