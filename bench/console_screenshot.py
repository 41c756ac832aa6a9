"""Screenshots of the web console of a running server (`make demo`, `convoplan serve`), as a user would take them:
the agent-assist view after a customer message, with the suggestions the server wrote, and the bot view with
"explain" on. Drives Debian's Chromium with Playwright; prints the suggestions it saw (with the passage that
supports each, or its unsupported claims, as the cards show them) and how long they took. Each `--customer`
message is a new conversation and a screenshot of its own (console.png, then console-2.png, ...), taken once every
suggestion is written.

    .venv/bin/python bench/console_screenshot.py --url http://127.0.0.1:8000 --out docs \
        --customer "hi, tell me about lions" --customer "how heavy is an elephant?"
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
WAIT = 120_000
"""Milliseconds to wait for the server's answers (suggestions from a pretrained LM on a CPU take seconds)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--customer", action="append", help="a customer's first message (repeat)")
    parser.add_argument("--user-message", default="tell me about elephants")
    args = parser.parse_args()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        for number, customer in enumerate(args.customer or ["hi, tell me about lions"], start=1):
            page = context.new_page()
            page.goto(f"{args.url}/console/")
            page.get_by_test_id("customer-input").fill(customer)
            started = time.perf_counter()
            page.get_by_test_id("customer-send").click()
            cards = page.get_by_test_id("suggestion")
            expect(cards.first).to_be_visible(timeout=WAIT)
            expect(page.locator('[data-testid="suggestion"][data-writing]')).to_have_count(0, timeout=WAIT)
            print(f"{customer!r}: suggestions after {time.perf_counter() - started:.1f} s (request to final cards):")
            for card in cards.all():
                lines = [line.text_content() for line in card.locator(".card-support").all()]
                print(f"  [{card.get_attribute('data-action')}] {card.locator('.card-text').text_content()}")
                for line in lines:
                    print(f"      {line}")
            name = "console.png" if number == 1 else f"console-{number}.png"
            page.screenshot(path=str(args.out / name))
            page.close()
        page = context.new_page()
        page.goto(f"{args.url}/console/#bot")
        page.get_by_test_id("bot-user").fill("alice")
        explain = page.get_by_test_id("explain-toggle")
        if explain.count():
            explain.check()
        page.get_by_test_id("bot-input").fill(args.user_message)
        page.get_by_test_id("bot-send").click()
        expect(page.get_by_test_id("bot-response")).to_have_count(1, timeout=WAIT)
        page.screenshot(path=str(args.out / "console-bot.png"))
        browser.close()
    print(f"wrote {args.out / 'console.png'} and {args.out / 'console-bot.png'}")


if __name__ == "__main__":
    main()
