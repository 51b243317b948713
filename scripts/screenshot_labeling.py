"""Screenshot of Label Studio's labeling screen with label-assistant's pre-labels (README).

Run against a running ``make demo`` (defaults) or any Label Studio with the demo project:

    pip install playwright            # the Python package only: no browser download
    apt-get install chromium          # the browser it drives (or pass --chromium PATH)
    python scripts/screenshot_labeling.py --out docs/images/labeling-screen.png

It logs in, opens the first task of the "Next to label" tab (what an annotator gets first),
waits for the image and the pre-label to be drawn, and saves a PNG quantised to 256 colours
(small enough to commit). Opening a task in Label Studio makes an unsaved draft from the
prediction; nothing is submitted.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import requests

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_USER = "admin@label-assistant.local"
DEFAULT_PASSWORD = "label-assistant"
DEFAULT_TOKEN = "label-assistant-token-0123456789"


def first_task(url: str, token: str, title: str) -> tuple[int, int, int]:
    """(project, "Next to label" tab, its first task) of the project titled ``title``."""
    headers = {"Authorization": f"Token {token}"}
    projects = requests.get(f"{url}/api/projects", headers=headers, timeout=30).json()
    project = next(p["id"] for p in projects["results"] if p["title"] == title)
    views = requests.get(f"{url}/api/dm/views", params={"project": project}, headers=headers,
                         timeout=30).json()
    view = next(v for v in views if v["data"].get("title") == "Next to label")
    tasks = requests.get(f"{url}/api/tasks", headers=headers, timeout=30, params={
        "project": project, "view": view["id"], "fields": "task_only", "page_size": 1}).json()
    return project, view["id"], tasks["tasks"][0]["id"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--user", default=DEFAULT_USER)
    parser.add_argument("--password", default=DEFAULT_PASSWORD)
    parser.add_argument("--token", default=DEFAULT_TOKEN)
    parser.add_argument("--project-title", default="label-assistant demo")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="browser executable")
    parser.add_argument("--out", type=Path, default=Path("docs/images/labeling-screen.png"))
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=800)
    args = parser.parse_args()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("screenshot: needs `pip install playwright` (the package; the browser is "
              "--chromium)", file=sys.stderr)
        return 2
    from PIL import Image

    project, view, task = first_task(args.url, args.token, args.project_title)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=args.chromium,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking"])
        page = browser.new_page(viewport={"width": args.width, "height": args.height})
        page.goto(f"{args.url}/user/login")
        page.fill("input[name=email]", args.user)
        page.fill("input[name=password]", args.password)
        page.click("button[type=submit]")
        page.wait_for_load_state("networkidle")
        page.goto(f"{args.url}/projects/{project}/data?tab={view}&task={task}")
        page.wait_for_load_state("networkidle")
        page.wait_for_selector("canvas", timeout=60_000)
        time.sleep(3)  # the brush masks are drawn after the image has loaded
        raw = args.out.with_suffix(".raw.png")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(raw))
        browser.close()
    Image.open(raw).convert("RGB").quantize(256).save(args.out, optimize=True)
    raw.unlink()
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB): project {project}, "
          f"task {task}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
