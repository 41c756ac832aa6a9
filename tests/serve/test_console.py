"""The web console end to end: Debian's Chromium, driven by Playwright, against a real `convoplan serve` process.

Agent assist (a customer message, suggestions streamed into their cards, one picked, edited and sent, the stored
turn), the bot (a response, a
thumbs up, the stored feedback, the explanation) and, against a stand-in API, the API key prompt. Skipped where
/usr/bin/chromium is missing, unless CONVOPLAN_REQUIRE_SERVICES=1 (CI), where that fails.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from convoplan.serve.process import ServerProcess
from convoplan.serve.store import Store

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Route

CHROMIUM = Path("/usr/bin/chromium")
REQUIRED = os.environ.get("CONVOPLAN_REQUIRE_SERVICES") == "1"
WAIT = 30_000
"""Milliseconds an expectation waits for the server (suggestions and bot responses run small models on the CPU)."""

if not CHROMIUM.exists() and not REQUIRED:  # skip before building the artifacts the server fixture needs
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; `make test` does)", allow_module_level=True)

from playwright.sync_api import expect, sync_playwright  # noqa: E402

ORIGIN = "http://console.invalid"
STAND_IN = {
    "sessions": {"id": "s1", "user_id": "anonymous-s1", "arm": "heuristic", "mode": "assist", "created_at": "now"},
    "messages": {"position": 0, "response": None, "response_position": None, "steps": [], "ended": False},
    "suggest": {
        "actions": [
            {
                "action": "inform",
                "score": 0.9,
                "reason": "model",
                "suggestions": [{"text": "Lions live in prides.", "score": -1.2, "finished": True}],
            }
        ],
        "seconds": 0.01,
    },
}
"""The stand-in API's answers (test_a_401_...), by the last part of the path."""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"CONVOPLAN_REQUIRE_SERVICES=1 but {CHROMIUM} is missing")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh tab (its own sessionStorage); fails the test on any uncaught error in the console's script."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"errors in the page: {errors}"


def test_assist_suggestion_is_picked_edited_sent_and_stored(page: Page, server: ServerProcess) -> None:
    page.goto(f"{server.url}/")  # redirects to /console/
    expect(page.get_by_test_id("tab-assist")).to_have_attribute("aria-selected", "true")
    # Count the moments a card being written shows some of its text (the suggestions stream into their cards).
    page.evaluate(
        """window.partial = 0; new MutationObserver(() => {
             if (document.querySelector('[data-writing] .card-text')?.textContent) window.partial++;
           }).observe(document.body, { subtree: true, childList: true, characterData: true });"""
    )
    page.get_by_test_id("customer-input").fill("hi, tell me about lions")
    with page.expect_response(lambda r: r.url.endswith("/v1/suggest"), timeout=WAIT) as suggested_response:
        page.get_by_test_id("customer-send").click()
    assert suggested_response.value.headers["content-type"].startswith("text/event-stream")
    expect(page.get_by_test_id("assist-turn-user")).to_contain_text("hi, tell me about lions", timeout=WAIT)
    cards = page.get_by_test_id("suggestion")
    expect(cards.first).to_be_visible(timeout=WAIT)
    expect(page.locator("[data-writing]")).to_have_count(0, timeout=WAIT)  # all written
    expect(page.get_by_test_id("status")).to_contain_text("first words after", timeout=WAIT)
    assert page.evaluate("window.partial") > 0  # text was shown before its suggestion was complete

    # A chip keeps only its action's suggestions.
    chip = page.get_by_test_id("action-chip").first
    action = chip.get_attribute("data-action")
    chip.click()
    expect(chip).to_have_attribute("aria-pressed", "true")
    expect(page.locator(f'[data-testid="suggestion"]:not([data-action="{action}"])')).to_have_count(0)
    expect(cards.first).to_be_visible()

    card = cards.first
    suggested = card.locator(".card-text").text_content()
    assert suggested
    card.click()
    editor = page.get_by_test_id("agent-input")
    expect(editor).to_have_value(suggested)
    editor.press("End")
    editor.press_sequentially(" Anything else?")
    page.get_by_test_id("agent-send").click()
    expect(page.get_by_test_id("assist-turn-agent")).to_contain_text("Anything else?", timeout=WAIT)
    expect(editor).to_have_value("")
    expect(page.get_by_test_id("status")).not_to_have_attribute("data-kind", "error")

    # Next, the agent writes their own reply while suggestions are shown.
    page.get_by_test_id("customer-input").fill("and elephants?")
    page.get_by_test_id("customer-send").click()
    expect(page.get_by_test_id("status")).to_contain_text("first words after", timeout=WAIT)
    editor.fill("Elephants are my favourite.")
    page.get_by_test_id("agent-send").click()
    expect(page.get_by_test_id("assist-turn-agent")).to_have_count(2, timeout=WAIT)
    expect(page.get_by_test_id("status")).not_to_have_attribute("data-kind", "error")

    session_id = page.get_by_test_id("assist-session").get_attribute("data-session-id")
    assert session_id
    store = Store(server.db)
    try:
        user, agent, _, own = store.turns(session_id)
    finally:
        store.close()
    assert (user.speaker, user.text) == ("user", "hi, tell me about lions")
    assert agent.speaker == "agent" and agent.text == f"{suggested} Anything else?".strip()
    # The suggestions shown are the turn's candidates, the one it started from selected; the outcome in meta.
    [picked] = [c for c in agent.candidates if c.selected]
    assert picked.text == suggested and len(agent.candidates) > 1
    choice = agent.meta["choice"]
    assert isinstance(choice, dict) and (choice["outcome"], choice["edit_distance"]) == ("edited", 15)
    assert agent.action == (action or None)
    assert agent.action_source == ("agent" if action else None)
    own_choice = own.meta["choice"]
    assert isinstance(own_choice, dict) and own_choice["outcome"] == "own" and own_choice["suggestion"] is None
    assert own.candidates and not any(c.selected for c in own.candidates)


def test_bot_response_gets_a_thumbs_up_that_is_stored(page: Page, server: ServerProcess) -> None:
    page.goto(f"{server.url}/console/#bot")
    expect(page.get_by_test_id("view-bot")).to_be_visible()
    page.get_by_test_id("bot-user").fill("alice")
    page.get_by_test_id("bot-input").fill("tell me about elephants")
    page.get_by_test_id("bot-send").click()
    response = page.get_by_test_id("bot-response")
    expect(response).to_have_count(1, timeout=WAIT)
    expect(response.locator(".text")).not_to_be_empty()
    arm = page.get_by_test_id("bot-arm")
    expect(arm).to_have_text(re.compile(r"^arm: (heuristic|greedy)$"))

    thumb = response.get_by_test_id("thumbs-up")
    thumb.click()
    expect(thumb).to_have_attribute("aria-pressed", "true", timeout=WAIT)
    expect(page.get_by_test_id("status")).to_have_text("Feedback stored: positive")

    explanation = response.get_by_test_id("explanation")
    expect(explanation).to_be_hidden()
    page.get_by_test_id("explain-toggle").check()
    expect(explanation).to_be_visible()
    expect(explanation.locator("tbody tr").first).to_be_visible()
    expect(explanation.locator("tr.selected")).not_to_have_count(0)

    session_id = arm.get_attribute("data-session-id")
    detail = httpx.get(f"{server.url}/v1/sessions/{session_id}", timeout=10).json()
    assert detail["session"]["user_id"] == "alice"
    assert arm.text_content() == f"arm: {detail['session']['arm']}"
    turns = detail["conversation"]["turns"]
    assert [t.get("meta", {}).get("feedback") for t in turns] == [None] * (len(turns) - 1) + ["positive"]
    assert turns[0]["text"] == "tell me about elephants"


def test_a_401_asks_for_the_api_key_and_retries_with_it(page: Page) -> None:
    """Against a stand-in API (no server to start): /v1/* answers 401 until the X-API-Key header is "sesame"."""
    console = Path(__file__).parents[2] / "convoplan" / "serve" / "console"
    keys: list[str | None] = []

    def answer(route: Route) -> None:
        path = route.request.url.removeprefix(ORIGIN).split("#")[0]
        if path.startswith("/console/"):
            name = path.removeprefix("/console/") or "index.html"
            route.fulfill(path=console / name)
        elif path == "/healthz":
            route.fulfill(json={"status": "ok", "arms": ["heuristic"], "assist": True})
        elif route.request.headers.get("x-api-key") != "sesame":
            keys.append(route.request.headers.get("x-api-key"))
            route.fulfill(status=401, json={"detail": "missing or wrong API key (send it in the X-API-Key header)"})
        else:
            keys.append("sesame")
            route.fulfill(status=201 if path == "/v1/sessions" else 200, json=STAND_IN[path.rsplit("/", 1)[-1]])

    page.route(f"{ORIGIN}/**", answer)
    page.goto(f"{ORIGIN}/console/")
    key_form = page.get_by_test_id("apikey-form")
    expect(key_form).to_be_hidden()
    page.get_by_test_id("customer-input").fill("hello there")
    page.get_by_test_id("customer-send").click()
    status = page.get_by_test_id("status")
    expect(status).to_have_attribute("data-kind", "error")
    expect(status).to_contain_text("missing or wrong API key")
    expect(key_form).to_be_visible()
    expect(page.get_by_test_id("assist-turn-user")).to_have_count(0)

    page.get_by_test_id("apikey-input").fill("sesame")
    page.get_by_test_id("apikey-save").click()  # runs the failed action again, with the key
    expect(page.get_by_test_id("assist-turn-user")).to_contain_text("hello there")
    expect(page.get_by_test_id("suggestion").locator(".card-text")).to_have_text(["Lions live in prides."])
    expect(key_form).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('convoplan.apiKey')") == "sesame"
    assert keys == [None, "sesame", "sesame", "sesame"]  # sessions (refused); sessions, messages, suggest


@pytest.mark.bad_input("10 headers, offline docs, unknown fields")
def test_the_console_and_the_api_docs_run_under_their_content_security_policy(
    page: Page, server: ServerProcess
) -> None:
    """No CSP violation on either page, and Swagger UI renders from this server's own files (no CDN)."""
    violations: list[str] = []
    page.on(
        "console",
        lambda message: violations.append(message.text) if "Content Security Policy" in message.text else None,
    )
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(f"{server.url}/console/")
    expect(page.locator("#tab-bot")).to_be_visible(timeout=WAIT)
    page.goto(f"{server.url}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("convoplan", timeout=WAIT)
    assert violations == []
    assert [url for url in requests if not url.startswith(server.url)] == []
