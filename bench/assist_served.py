"""Agent assist served and measured from the store: simulated agents use `convoplan serve` over HTTP as the console
does (customer message, suggestions for the action they mean, their choice sent back), each agent in one of the
serve.json `assist_arms` by a hash of its id, then `convoplan experiment report --assist --db` reads the store
(issue 30: the report from a served run, not only from simulation).

The artifacts folder gets a serve.json with `assist_arms` written into a temp copy (the control's LM and the other
arms' by `--arm NAME=FOLDER`, written suggestions only); the server runs with its own SQLite store, one model
worker, one thread.

    OMP_NUM_THREADS=1 .venv/bin/python bench/assist_served.py --artifacts runs/demo/artifacts \\
        --data runs/g28/animals.jsonl --arm base=runs/g28/animals-directed-k10c --arm tuned=runs/g30/terse/round-2 \\
        --population terse --agents 12 --max-messages 6 --out runs/g30/served-terse
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import httpx

from convoplan.schema import Candidate, Conversation, Turn, read_jsonl
from convoplan.serve.artifacts import read_manifest, write_manifest
from convoplan.serve.process import ServerProcess, free_port
from convoplan.sim.protocols import SimulatedAgent
from convoplan.worlds.animals.agents import agent_population


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", type=Path, required=True, help="an artifacts folder (serve.json)")
    parser.add_argument("--data", type=Path, required=True, help="conversations whose test split is replayed")
    parser.add_argument("--arm", action="append", required=True, help="NAME=LM folder; the first is the control")
    parser.add_argument("--population", default="thorough")
    parser.add_argument("--agents", type=int, default=12, help="agents, one test conversation each")
    parser.add_argument("--max-messages", type=int, default=6, help="agent messages per conversation")
    parser.add_argument("--n", type=int, default=3, help="suggestions per message")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    arms = dict(spec.split("=", 1) for spec in args.arm)
    test = [c for c in read_jsonl(args.data) if c.meta.get("split") == "test"][: args.agents]
    new_agent = agent_population(args.population)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "artifacts"
        shutil.copytree(args.artifacts, root)
        manifest = read_manifest(root)
        folders = {name: str(Path(folder).resolve()) for name, folder in arms.items()}
        # Written suggestions only (what the arms differ in), and no LM provider for the bot (no bot sessions here).
        write_manifest(root, replace(manifest, assist_arms=folders, suggestions="lm", lm_provider=False))
        db = f"sqlite:///{args.out.resolve() / 'serve.db'}"
        (args.out / "serve.db").unlink(missing_ok=True)
        server = ServerProcess(root, db, free_port(), args.out / "server.log", ("model_workers=1", "torch_threads=1"))
        server.start(timeout=600)
        try:
            with httpx.Client(base_url=server.url, timeout=600) as client:
                for k, conversation in enumerate(test):
                    agent_id = f"{args.population}-agent-{k}"
                    agent = new_agent(random.Random(agent_id))
                    replay(client, conversation, agent, agent_id, args.max_messages, args.n)
                    print(f"agent {k + 1}/{len(test)} done", flush=True)
        finally:
            server.stop()
    control = next(iter(arms))
    command = [sys.executable, "-m", "convoplan.cli", "experiment", "report", "--assist", "--db", db]
    command += ["--control", control, "--out", str(args.out / "report")]
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    print((args.out / "report" / "report.md").read_text())


def replay(
    client: httpx.Client, conversation: Conversation, agent: SimulatedAgent, agent_id: str, messages: int, n: int
) -> None:
    """One agent handles one conversation through the API: the customer's logged messages, and at each of its
    first `messages` agent messages, `n` suggestions for the action it means, then its choice sent back."""
    sid = client.post("/v1/sessions", json={"mode": "assist", "user_id": agent_id}).json()["id"]
    turns: list[Turn] = []
    for meant in conversation.turns:
        if messages == 0:
            break
        if meant.speaker == "user":
            client.post(f"/v1/sessions/{sid}/messages", json={"speaker": "user", "text": meant.text}).raise_for_status()
            turns.append(meant)
            continue
        answer = client.post("/v1/suggest", json={"session_id": sid, "action": meant.action, "actions": 1, "n": n})
        answer.raise_for_status()
        data = answer.json()
        shown = [Candidate(s["text"], g["action"]) for g in data["actions"] for s in g["suggestions"]]
        choice = agent.choose(replace(conversation, turns=list(turns), events=[]), meant, shown)
        sent = {
            "speaker": "agent",
            "text": choice.text,
            "action": meant.action,
            "choice": {"request_id": data["request_id"], "suggestion": choice.suggestion},
        }
        client.post(f"/v1/sessions/{sid}/messages", json=sent).raise_for_status()
        turns.append(Turn("agent", choice.text, action=meant.action))
        messages -= 1


if __name__ == "__main__":
    main()
