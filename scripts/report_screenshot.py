"""The screenshot of a test report's first screen in docs/report.png: report.html in headless Chromium.

    python scripts/report_screenshot.py --report RUN/test/report.html --output docs/report.png

Uses the DevTools driver of the browser test (tests/browser.py) and Debian's ``chromium``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from browser import Browser, find_chromium  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report", required=True, help="report.html written by 'scgan test'")
    ap.add_argument("--output", default="docs/report.png")
    ap.add_argument("--width", type=int, default=1200)
    ap.add_argument("--height", type=int, default=900)
    args = ap.parse_args()
    chromium = find_chromium()
    if chromium is None:
        sys.exit("no Chromium binary on PATH (apt-get install chromium)")
    browser = Browser(chromium, width=args.width, height=args.height)
    try:
        browser.goto(Path(args.report).resolve().as_uri())
        browser.wait_for("Array.from(document.images).every(i => i.complete)")
        browser.screenshot(args.output)
    finally:
        browser.close()
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
