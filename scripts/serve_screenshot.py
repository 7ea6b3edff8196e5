"""The screenshot of the ``scgan serve`` page in docs/serve.png: a real server, headless Chromium, two images.

    python scripts/serve_screenshot.py --checkpoint MODEL --output docs/serve.png IMAGE [IMAGE ...]

Uses the DevTools driver of the browser test (tests/browser.py) and Debian's ``chromium``.
"""
from __future__ import annotations

import argparse
import socket
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from browser import Browser, find_chromium  # noqa: E402


def main() -> None:
    import uvicorn

    from scgan.inference.detector import Detector
    from scgan.serve import create_app

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--output", default="docs/serve.png")
    ap.add_argument("images", nargs="+")
    args = ap.parse_args()
    chromium = find_chromium()
    if chromium is None:
        sys.exit("no Chromium binary on PATH (apt-get install chromium)")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(Detector.load(args.checkpoint)), log_level="warning"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    browser = Browser(chromium, width=1200, height=1000)
    try:
        browser.goto(f"http://127.0.0.1:{sock.getsockname()[1]}/")
        browser.wait_for("document.getElementById('model').textContent.includes('px')")
        browser.set_files("#file", [str(Path(p).resolve()) for p in args.images])
        browser.wait_for(f"document.querySelectorAll('#results .card[data-normalized]').length === {len(args.images)}")
        browser.wait_for("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        browser.screenshot(args.output)
    finally:
        browser.close()
        server.should_exit = True
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
