"""Screenshots of Label Studio with label-assistant at work, for the README.

Run against a running ``make demo`` (defaults) or any Label Studio with the demo project:

    pip install playwright            # the Python package only: no browser download
    apt-get install chromium          # the browser it drives (or pass --chromium PATH)
    python scripts/screenshot_labeling.py [--shots labeling instructions quarantined tab model
                                           next-tab suggestion clicks box-click]

It logs in with headless Chromium at 1440 x 900 and saves, in ``--out-dir``
(``docs/images``), PNGs quantised to 256 colours (small enough to commit):

- ``labeling``: the first task of the "Next to label" tab (what an annotator gets first),
  with its pre-label, the one-line partial-labeling hint and the label buttons
  (``labeling-screen.png``);
- ``instructions``: the "Labeling Instructions" dialog Label Studio shows when an annotator
  starts labeling the tab (``labeling-instructions.png``);
- ``quarantined``: the first task of the "Quarantined" tab, with its warnings above the image
  and the label buttons (``quarantined-task.png``);
- ``tab``: the "Quarantined" tab with its ``la_warnings`` column (``quarantined-tab.png``; in
  view without scrolling in a tab laid out by ``client.tab_layout``);
- ``next-tab``: the "Next to label" tab as it opens, ranked by ``la_rank`` (``next-tab.png``);
- ``suggestion``: an interactive suggestion on the labeling screen
  (``interactive-suggestion.png``): on the first task of "Next to label" without a draft (or
  ``--task``), Auto-Annotation on (the bottom bar's toggle, shown when the project's ML
  backend is interactive), the smart keypoint tool picked from the toolbar's Auto-Detect
  button with the ``click`` control's label (its hotkey), the pre-label hidden, one click on
  the innermost point of the pre-label's object nearest the image centre; it waits for the
  backend's answer ("1 suggestions"). Label Studio saves the click as a draft of that task
  (the next run picks another task); the request the screen sent is printed;
- ``clicks``: on the next such task, two clicks on one object with the smart keypoint tool
  (the second at the object's pixel farthest from the first), the suggestion rejected, then
  the object's four extreme points with the ``extreme`` control's own smart keypoint tool
  (Auto-Detect's second); it prints what each request to the backend held and the
  suggestions shown, and saves the end (``interactive-extreme.png``);
- ``box-click``: on the next such task, a smart box around one object (20% wider), the
  suggestion rejected, then one click inside the object: prints what each request held and
  how the backend made each mask (``method``: a click inside the task's last box refines
  that box's mask), and saves the end (``interactive-box-click.png``; not in the README);
- ``model``: the project's Settings -> Model page, whose card names the version that serves
  the pre-labels (the backend renames its Label Studio ML backend to it: ``otsu-<hash>``
  before any model, ``v0001`` after a promotion) and the training toggle (``model-card.png``).

``--version V`` first waits (up to ``--wait`` s) until the project's ML backend is named ``V``:
the backend's worker renames it a few seconds after a promotion (``label-assistant rounds
--promote V``).

``--quarantine`` first submits, on the first task of "Next to label", an annotation holding
only the pre-label's regions (no Background, as a hurried annotator would), which the backend
quarantines; the Quarantined tab then has a task to show. It writes into the project: use
it on a demo. Opening a task makes an unsaved draft from the prediction; nothing else is
submitted (``suggestion`` leaves a saved draft, above). ``suggestion`` reads the pre-label's
mask with label-assistant's RLE decoder (numpy and scipy): run it with the project's
environment on the path.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import requests

DEFAULT_URL = "http://127.0.0.1:8080"
SUGGESTIONS = "text=/\\d+ suggestions?/"  # the bottom bar's count of suggestions
DEFAULT_USER = "admin@label-assistant.local"
DEFAULT_PASSWORD = "label-assistant"
DEFAULT_TOKEN = "label-assistant-token-0123456789"
DEFAULT_TITLE = "label-assistant demo: DSB 2018 nuclei"
NEXT, QUARANTINED = "Next to label", "Quarantined"
SHOTS = {"labeling": "labeling-screen.png", "instructions": "labeling-instructions.png",
         "quarantined": "quarantined-task.png", "tab": "quarantined-tab.png",
         "model": "model-card.png", "next-tab": "next-tab.png",
         "suggestion": "interactive-suggestion.png", "clicks": "interactive-extreme.png",
         "box-click": "interactive-box-click.png"}


class Project:
    """The demo project through the API: its id, tabs and their first tasks."""

    def __init__(self, url: str, token: str, title: str) -> None:
        self.url, self.headers = url, {"Authorization": f"Token {token}"}
        projects = self._get("/api/projects", title=title)["results"]
        found = [p["id"] for p in projects if p["title"] == title]
        if not found:
            raise SystemExit(f"screenshot: no project titled {title!r} at {url}")
        self.id = found[0]

    def _get(self, path: str, **params: Any) -> Any:
        response = requests.get(f"{self.url}{path}", params=params, headers=self.headers,
                                timeout=60)
        response.raise_for_status()
        return response.json()

    def view(self, title: str) -> int:
        views = self._get("/api/dm/views", project=self.id)
        found = [v["id"] for v in views if v["data"].get("title") == title]
        if not found:
            raise SystemExit(f"screenshot: project {self.id} has no {title!r} tab")
        return found[0]

    def first_task(self, view: int) -> int | None:
        tasks = self._get("/api/tasks", project=self.id, view=view, fields="task_only",
                          page_size=1)["tasks"]
        return tasks[0]["id"] if tasks else None

    def first_task_without_draft(self, view: int) -> dict[str, Any] | None:
        """The first task of the tab with a pre-label and no draft (all its fields)."""
        tasks = self._get("/api/tasks", project=self.id, view=view, fields="all",
                          page_size=100)["tasks"]
        return next((t for t in tasks if t.get("predictions") and not t.get("drafts")), None)

    def task(self, task: int) -> dict[str, Any]:
        return self._get(f"/api/tasks/{task}")

    def backend_titles(self) -> list[str]:
        """The names of the project's ML backends: what its Model card shows."""
        return [str(b["title"]) for b in self._get("/api/ml", project=self.id)]

    def wait_version(self, version: str, seconds: float) -> None:
        """Until one of the project's ML backends is named ``version``."""
        deadline = time.time() + seconds
        while version not in (titles := self.backend_titles()):
            if time.time() > deadline:
                raise SystemExit(f"screenshot: the project's ML backend is still named "
                                 f"{titles} after {seconds:.0f} s, not {version!r}")
            time.sleep(2)

    def quarantine(self, task: int) -> str:
        """Submit the task's pre-label alone (no Background); the backend's verdict."""
        predictions = self._get("/api/predictions", task=task)
        if not predictions:
            raise SystemExit(f"screenshot: task {task} has no pre-label to submit")
        requests.post(f"{self.url}/api/tasks/{task}/annotations", headers=self.headers,
                      json={"result": predictions[0]["result"]}, timeout=60).raise_for_status()
        for _ in range(120):
            status = self._get(f"/api/tasks/{task}")["data"].get("la_status")
            if status:
                return str(status)
            time.sleep(1)
        raise SystemExit(f"screenshot: no verdict on task {task} after 120 s")


def _save(page: Any, out: Path, limit: int = 300_000) -> None:
    """The page as a PNG of 256 colours, or fewer until it is under ``limit`` bytes."""
    from PIL import Image

    raw = out.with_suffix(".raw.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(raw))
    image = Image.open(raw).convert("RGB")
    for colours in (256, 192, 128, 96, 64):
        image.quantize(colours).save(out, optimize=True)
        if out.stat().st_size < limit:
            break
    raw.unlink()
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB)", flush=True)


def _object(task: dict[str, Any]) -> Any:
    """The pre-label's object nearest the image centre (its first brush result that is not
    Background; at least 50 pixels when it has such objects): a bool mask."""
    import numpy as np
    from scipy import ndimage

    from label_assistant.labelstudio.rle import decode_rle

    results = [r for p in task["predictions"] for r in p["result"]
               if r.get("type") == "brushlabels"
               and r["value"].get("brushlabels", ["Background"])[0] != "Background"]
    if not results:
        raise SystemExit(f"screenshot: task {task['id']}'s pre-label has no object to click")
    height, width = results[0]["original_height"], results[0]["original_width"]
    objects, count = ndimage.label(decode_rle(results[0]["value"]["rle"], height, width) > 0)
    if not count:
        raise SystemExit(f"screenshot: task {task['id']}'s pre-label is empty")
    centres = ndimage.center_of_mass(objects > 0, objects, range(1, count + 1))
    sizes = ndimage.sum(objects > 0, objects, range(1, count + 1))
    candidates = [i for i in range(count) if sizes[i] >= 50] or list(range(count))
    pick = 1 + min(candidates, key=lambda i: (centres[i][0] - height / 2) ** 2
                   + (centres[i][1] - width / 2) ** 2)
    return np.asarray(objects == pick)


def _object_point(task: dict[str, Any]) -> tuple[float, float]:
    """Where to click (fractions of the image width and height): the innermost pixel of
    :func:`_object`."""
    import numpy as np
    from scipy import ndimage

    mask = _object(task)
    height, width = mask.shape
    depth = ndimage.distance_transform_edt(mask)
    y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return (x + 0.5) / width, (y + 0.5) / height


def _smart_keypoints(page: Any, url: str, project: int, view: int, task: dict[str, Any],
                     control: int, sent: list[str]) -> list[float]:
    """Open the task, switch Auto-Annotation on, pick the smart keypoint tool with the first
    label of the ``control``-th labels control (2: ``click``, 3: ``extreme`` in the demo's
    config: brush, box, click, extreme), hide the pre-label; the image's screen rectangle
    ``[x, y, width, height]``. Each request the screen sends to the backend goes to ``sent``."""
    page.on("request", lambda r: sent.append(r.post_data or "")
            if "/interactive-annotating" in r.url else None)
    _open_task(page, url, project, view, task["id"])
    if page.evaluate("() => localStorage.getItem('autoAnnotation')") != "true":
        page.get_by_text("Auto-Annotation", exact=True).click()
    # Auto-Detect holds the smart tools (shown only with Auto-Annotation on); hover lists them.
    page.locator(".lsf-tool_smart").first.hover()
    page.locator(".lsf-tool_smart[aria-label=key-point-tool]").first.click()
    _pick_label(page, control)
    page.locator("[aria-label='Hide all regions']").click()  # the pre-label, to see the answer
    return page.evaluate("""() => { const img = Array.from(document.querySelectorAll('img'))
        .find(i => i.naturalWidth > 0 && i.getBoundingClientRect().width > 200);
        const r = img.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; }""")


def _pick_label(page: Any, control: int) -> None:
    """Selects the first label of the ``control``-th labels control, by its hotkey (clicking
    it would scroll the image), unless it is selected."""
    label = page.locator(".lsf-labels").nth(control).locator(".lsf-label").first
    if "selected" not in (label.get_attribute("class") or ""):
        page.keyboard.press(label.inner_text().split()[-1])


def _suggest(page: Any, url: str, project: int, view: int, task: dict[str, Any]) -> None:
    """Open the task, switch Auto-Annotation on, click the object with the smart keypoint
    tool and wait for the backend's suggestion (see the module doc)."""
    fx, fy = _object_point(task)
    sent: list[str] = []
    image = _smart_keypoints(page, url, project, view, task, 2, sent)
    page.mouse.click(image[0] + fx * image[2], image[1] + fy * image[3])
    page.wait_for_selector(SUGGESTIONS, timeout=120_000)
    page.mouse.move(5, 5)
    time.sleep(2)
    print(f"task {task['id']}: the screen sent {sent[-1] if sent else 'nothing'}", flush=True)


def _regions(post: str) -> str:
    """What one request to the backend held: each region's control, and ``-`` for a
    negative keypoint."""
    try:
        result = json.loads(post)["context"]["result"]
    except (ValueError, KeyError, TypeError):
        return f"(not a context: {post[:80]!r})"
    return " ".join(f"{r.get('from_name')}{'' if r.get('is_positive', True) else '-'}"
                    for r in result) or "(none)"


def _await_answer(page: Any, task: dict[str, Any], label: str, sent: list[str], before: int,
                  answers: list[Any] | None = None) -> None:
    """After an action: wait for the screen's request to the backend (``sent`` grows past
    ``before``; at most 20 s) and its answer (``answers``, when kept, as long as ``sent``; at
    most 30 s more, then 3 s for the screen to draw it); print what the request held and the
    suggestions shown."""
    deadline = time.time() + 20
    while len(sent) == before and time.time() < deadline:
        page.wait_for_timeout(250)
    deadline = time.time() + 30
    while answers is not None and len(answers) < len(sent) and time.time() < deadline:
        page.wait_for_timeout(250)
    page.wait_for_timeout(3000)
    shown = page.locator(SUGGESTIONS).all_inner_texts()
    what = _regions(sent[-1]) if len(sent) > before else "nothing"
    print(f"task {task['id']}: {label}: sent {what}; shown {shown or 'no suggestion'}",
          flush=True)


def _clicks_then_extreme(page: Any, url: str, project: int, view: int,
                         task: dict[str, Any]) -> None:
    """Two clicks on one object (the second at its pixel farthest from the first), then its
    four extreme points with the ``extreme`` control; prints what each request held and
    the suggestions shown."""
    import numpy as np

    mask = _object(task)
    height, width = mask.shape
    fx, fy = _object_point(task)
    rows, cols = np.nonzero(mask)
    far = int(np.argmax((cols + 0.5 - fx * width) ** 2 + (rows + 0.5 - fy * height) ** 2))
    extreme = [int(np.argmin(cols)), int(np.argmax(cols)), int(np.argmin(rows)),
               int(np.argmax(rows))]
    sent: list[str] = []
    image = _smart_keypoints(page, url, project, view, task, 2, sent)

    def click(x: float, y: float, label: str, control: int = 2) -> None:
        before = len(sent)
        _pick_label(page, control)  # a region just made unselects the label
        page.mouse.click(image[0] + x * image[2], image[1] + y * image[3])
        _await_answer(page, task, label, sent, before)

    click(fx, fy, "click 1")
    click((cols[far] + 0.5) / width, (rows[far] + 0.5) / height, "click 2")
    # Rejected, not accepted: an accepted mask is a region, and a click on a region selects
    # it instead of making a keypoint (the extreme points lie on the object's edge).
    page.locator(".lsf-auto-accept__action_type_reject").click()
    page.wait_for_timeout(1000)
    left = page.locator(SUGGESTIONS).all_inner_texts()
    print(f"task {task['id']}: rejected: suggestions shown {left or 'none'}", flush=True)
    # the extreme control's own smart tool (the second smart keypoint tool of Auto-Detect)
    page.locator(".lsf-tool_smart").first.hover()
    page.locator(".lsf-tool_smart[aria-label=key-point-tool]").nth(1).click()
    for k, i in enumerate(extreme):
        click((cols[i] + 0.5) / width, (rows[i] + 0.5) / height, f"extreme point {k + 1}", 3)
    page.mouse.move(5, 5)
    time.sleep(2)


def _box_then_click(page: Any, url: str, project: int, view: int,
                    task: dict[str, Any]) -> None:
    """A smart box around one object (its bounding box, 20% wider on each side), the box's
    suggestion rejected, then one click inside the object with the smart keypoint tool;
    prints what each request held and, from the backend's answers, each mask's pixels and its
    IoU with the pre-label's object, and whether the click's mask stays in the box (the
    backend remembers a task's last box: clicks inside it refine the box's mask)."""
    import numpy as np

    from label_assistant.labelstudio.rle import decode_rle

    mask = _object(task)
    height, width = mask.shape
    rows, cols = np.nonzero(mask)
    margin_y = 0.2 * (rows.max() + 1 - rows.min())
    margin_x = 0.2 * (cols.max() + 1 - cols.min())
    y0, y1 = max(0.0, rows.min() - margin_y), min(height, rows.max() + 1 + margin_y)
    x0, x1 = max(0.0, cols.min() - margin_x), min(width, cols.max() + 1 + margin_x)
    fx, fy = _object_point(task)
    sent: list[str] = []
    answers: list[Any] = []
    page.on("response", lambda r: answers.append(r)
            if "/interactive-annotating" in r.url else None)
    image = _smart_keypoints(page, url, project, view, task, 2, sent)

    def screen(x: float, y: float) -> tuple[float, float]:
        return image[0] + x / width * image[2], image[1] + y / height * image[3]

    page.locator(".lsf-tool_smart").first.hover()
    page.locator(".lsf-tool_smart[aria-label=rectangle-tool]").first.click()
    _pick_label(page, 1)
    before = len(sent)
    page.mouse.move(*screen(x0, y0))
    page.mouse.down()
    page.mouse.move(*screen(x1, y1), steps=8)
    page.mouse.up()
    _await_answer(page, task, "box", sent, before, answers)
    page.locator(".lsf-auto-accept__action_type_reject").click()
    page.wait_for_timeout(1000)
    page.locator(".lsf-tool_smart").first.hover()
    page.locator(".lsf-tool_smart[aria-label=key-point-tool]").first.click()
    _pick_label(page, 2)
    before = len(sent)
    page.mouse.click(*screen(fx * width, fy * height))
    _await_answer(page, task, "click", sent, before, answers)
    page.mouse.move(5, 5)
    time.sleep(2)
    masks, methods = [], []
    for answer in answers:
        try:
            data = answer.json()["data"]
            result = data["result"]
        except (ValueError, KeyError, TypeError):
            continue
        brush = [r for r in result if r.get("type") == "brushlabels"]
        if brush:
            masks.append(decode_rle(brush[0]["value"]["rle"], height, width) > 0)
            methods.append(data.get("method", "?"))  # how the backend made it
    inside = np.zeros_like(mask)
    inside[int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))] = True

    def iou(a: Any, b: Any) -> float:
        return float((a & b).sum() / max(1, (a | b).sum()))

    for name, m, method in zip(("box", "click"), masks, methods, strict=False):
        share = (m & inside).sum() / max(1, m.sum())
        print(f"task {task['id']}: {name}'s mask ({method}): {int(m.sum())} px, IoU with the "
              f"pre-label's object {iou(m, mask):.3f}, share inside the box {share:.3f}",
              flush=True)
    if len(masks) == 2:
        print(f"task {task['id']}: IoU of the click's mask with the box's: "
              f"{iou(masks[0], masks[1]):.3f}", flush=True)


def _open_task(page: Any, url: str, project: int, view: int, task: int) -> None:
    page.goto(f"{url}/projects/{project}/data?tab={view}&task={task}")
    page.wait_for_load_state("networkidle")
    page.wait_for_selector("canvas", timeout=120_000)
    time.sleep(3)  # the brush masks are drawn after the image has loaded


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--user", default=DEFAULT_USER)
    parser.add_argument("--password", default=DEFAULT_PASSWORD)
    parser.add_argument("--token", default=DEFAULT_TOKEN)
    parser.add_argument("--project-title", default=DEFAULT_TITLE)
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="browser executable")
    parser.add_argument("--out-dir", type=Path, default=Path("docs/images"))
    parser.add_argument("--shots", nargs="+", choices=sorted(SHOTS), default=list(SHOTS))
    parser.add_argument("--quarantine", action="store_true",
                        help="first submit a pre-label without Background (see above)")
    parser.add_argument("--version", help="wait until the Model card shows this version")
    parser.add_argument("--wait", type=float, default=300,
                        help="seconds --version waits (default 300)")
    parser.add_argument("--task", type=int,
                        help="the task of the suggestion shot (default: the first of Next to "
                             "label with a pre-label and no draft)")
    parser.add_argument("--width", type=int, default=1440)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("screenshot: needs `pip install playwright` (the package; the browser is "
              "--chromium)", file=sys.stderr)
        return 2

    project = Project(args.url, args.token, args.project_title)
    next_view = project.view(NEXT)
    if args.version:
        project.wait_version(args.version, args.wait)
    if args.quarantine:
        task = project.first_task(next_view)
        if task is None:
            raise SystemExit("screenshot: the Next to label tab is empty")
        print(f"task {task}: {project.quarantine(task)}", flush=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=args.chromium,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": args.width, "height": args.height})
        page.goto(f"{args.url}/user/login")
        page.fill("input[name=email]", args.user)
        page.fill("input[name=password]", args.password)
        page.click("button[type=submit]")
        page.wait_for_load_state("networkidle")
        for shot in args.shots:
            out = args.out_dir / SHOTS[shot]
            if shot == "labeling":
                task = project.first_task(next_view)
                if task is None:
                    raise SystemExit("screenshot: the Next to label tab is empty")
                _open_task(page, args.url, project.id, next_view, task)
            elif shot == "model":
                titles = project.backend_titles()
                if not titles:
                    raise SystemExit("screenshot: the project has no ML backend connected")
                page.goto(f"{args.url}/projects/{project.id}/settings/ml")
                page.wait_for_load_state("networkidle")
                page.wait_for_selector(f"text={titles[0]}", timeout=120_000)
                time.sleep(2)
            elif shot in ("suggestion", "clicks", "box-click"):
                fresh = (project.task(args.task) if args.task
                         else project.first_task_without_draft(next_view))
                if fresh is None:
                    raise SystemExit("screenshot: no task of Next to label has a pre-label "
                                     "and no draft")
                act = {"suggestion": _suggest, "clicks": _clicks_then_extreme,
                       "box-click": _box_then_click}[shot]
                act(page, args.url, project.id, next_view, fresh)
            elif shot == "next-tab":
                page.goto(f"{args.url}/projects/{project.id}/data?tab={next_view}")
                page.wait_for_load_state("networkidle")
                page.wait_for_selector("text=la_rank", timeout=120_000)
                time.sleep(3)  # the thumbnails
            elif shot == "instructions":
                # The label stream of the tab: Label Studio opens it with the dialog.
                page.goto(f"{args.url}/projects/{project.id}/data?tab={next_view}&labeling=1")
                page.wait_for_selector("text=Labeling Instructions", timeout=120_000)
                page.wait_for_selector("canvas", timeout=120_000)
                time.sleep(4)  # the image behind the dialog
            else:
                view = project.view(QUARANTINED)
                task = project.first_task(view)
                if task is None:
                    raise SystemExit("screenshot: the Quarantined tab is empty (--quarantine "
                                     "makes one)")
                if shot == "quarantined":
                    _open_task(page, args.url, project.id, view, task)
                else:
                    page.goto(f"{args.url}/projects/{project.id}/data?tab={view}")
                    page.wait_for_load_state("networkidle")
                    page.wait_for_selector("text=la_warnings", timeout=120_000)
                    page.locator("text=la_warnings").first.scroll_into_view_if_needed()
                    time.sleep(2)
            _save(page, out)
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
