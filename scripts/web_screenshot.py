#!/usr/bin/env python3
"""Screenshot of the web page's chat view, with Debian's headless chromium.

    .venv/bin/python scripts/web_screenshot.py URL COLLECTION "QUESTION" OUT.png [--key KEY] [--width 1200]

Against a running service whose COLLECTION is indexed: asks QUESTION in the
chat view, waits for the whole answer, and saves the page. The README's image
(docs/images/chat.png) was made this way.
"""

from __future__ import annotations

import argparse
import json
import shutil

from playwright.sync_api import sync_playwright


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("no chromium found: scripts/install --dev installs Debian's")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("collection")
    parser.add_argument("question")
    parser.add_argument("out")
    parser.add_argument("--key", help="API key (read scope on the collection); the page keeps it in session storage")
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--passage", action="store_true", help="open the first source's passage too")
    args = parser.parse_args()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": args.width, "height": args.height}, device_scale_factor=1)
        if args.key:
            page.add_init_script(f"sessionStorage.setItem('rag.apiKey', {json.dumps(args.key)})")
        page.goto(f"{args.url.rstrip('/')}/#/c/{args.collection}/chat")
        page.fill("#question", args.question)
        page.keyboard.press("Enter")
        page.locator(".reply .status").filter(has_text="tokens").wait_for(timeout=300_000)
        page.locator("#question").blur()
        if args.passage:
            page.locator(".reply .source-link").first.click()
            page.locator("#passage-dialog mark").first.wait_for()
        page.screenshot(path=args.out)
        browser.close()


if __name__ == "__main__":
    main()
