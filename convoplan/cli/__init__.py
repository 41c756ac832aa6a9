"""The `convoplan` command line: one verb group per capability (`convoplan --help`)."""

import typer

from convoplan.cli.callflow import callflow_app
from convoplan.cli.common import Commands
from convoplan.cli.data import data_app
from convoplan.cli.dm import dm_app
from convoplan.cli.experiment import experiment_app
from convoplan.cli.label import label_app
from convoplan.cli.lm import lm_app, suggest_command
from convoplan.cli.nba import nba_app
from convoplan.cli.ope import ope
from convoplan.cli.serve import serve
from convoplan.cli.world import chat, demo, world_app

__all__ = ["app"]

app = typer.Typer(
    help="convoplan: learn from logged conversations which action to take next and how to say it.",
    no_args_is_help=True,
    add_completion=False,
    cls=Commands,  # a full disk ends any command in one line
)
app.add_typer(data_app, name="data")
app.add_typer(world_app, name="world")
app.add_typer(dm_app, name="dm")
app.add_typer(experiment_app, name="experiment")
app.add_typer(label_app, name="label")
app.add_typer(callflow_app, name="callflow")
app.add_typer(nba_app, name="nba")
app.add_typer(lm_app, name="lm")
app.command("chat")(chat)
app.command("demo")(demo)
app.command("suggest")(suggest_command)
app.command("ope")(ope)
app.command("serve")(serve)
