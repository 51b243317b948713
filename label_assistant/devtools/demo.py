"""``make demo``: a real Label Studio 1.23.2 with label-assistant connected, on real microscopy.

1. the images: 32 nucleus images of the 2018 Data Science Bowl (BBBC038v1, CC0), three
   experiment groups (grey fluorescence of two sizes, colour bright-field tissue), shipped in
   ``demo_images/`` beside this module with their masks and ``ATTRIBUTION.md``; copied into
   ``demo-data/images`` (grey ones contrast-stretched for the browser);
2. Label Studio: a local server from ``.ls-venv`` with its data in ``demo-data/label-studio``
   (admin user and token printed), or the one named by ``LABEL_STUDIO_URL`` and
   ``LABEL_STUDIO_API_KEY``;
3. the backend: ``label-assistant serve`` (work dir ``demo-data/work``, log
   ``demo-data/backend.log``);
4. the project "label-assistant demo: DSB 2018 nuclei": brush labels Background and Nucleus,
   the partial-labeling instructions and the header that shows our warnings; the images
   uploaded as tasks, each with its experiment group as ``sequence``;
5. the backend connected, Otsu pre-labels retrieved for every task, the tasks ranked
   (``sequence``: one image per experiment group first) into the Data Manager tab "Next to
   label";
6. where to go, then it waits for Ctrl-C, reporting each model version the backend trains.

Each step reuses what an earlier run left (``demo-data/demo.json`` remembers the project),
so a rerun takes seconds. ``DEMO_CHECK=1`` runs the same path headless in
``demo-data/check`` (started afresh each time), submits one partial annotation as an
annotator would, waits for the backend's verdict to show up in Label Studio, then starts
everything a second time to prove the state is reused; it exits 0, or 1 with the reason.

Settings: ``LA_DEMO_DIR`` (``demo-data``), ``LA_DEMO_LS_PORT`` (8080) and ``LA_DEMO_PORT``
(9090; another free port when taken), ``LA_DEMO_BACKEND_URL`` (how Label Studio reaches the
backend; ``http://127.0.0.1:<port>``); the backend's own settings (``LA_TRAIN_AFTER``,
``LA_STRATEGY``, ``LA_TRAIN_CONFIG``, ...) pass through, with ``LA_TRAIN_AFTER=3`` unless
set; training uses the package's CPU default.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import requests
from PIL import Image

from label_assistant.devtools.labelstudio_server import (
    DEFAULT_PASSWORD,
    DEFAULT_TOKEN,
    DEFAULT_USERNAME,
    LabelStudioServer,
    LabelStudioServerError,
    copy_data_dir,
    free_port,
    init_data_dir,
    stop_process_group,
)
from label_assistant.labelstudio.client import (
    NEXT_VIEW_TITLE,
    RANK_FIELD,
    STATUS_FIELD,
    WARNINGS_FIELD,
    LabelStudioClient,
    LabelStudioError,
)
from label_assistant.labelstudio.config import PARTIAL_LABELING_HINT as PARTIAL_LABELING_HINT
from label_assistant.labelstudio.config import brush_label_config, labeling_instructions

ROOT = Path(__file__).resolve().parents[2]  # the repository
#: Real microscopy shipped with the package: 2018 Data Science Bowl images (CC0) of three
#: experiment groups, their masks and ATTRIBUTION.md.
DEMO_IMAGES = Path(__file__).resolve().parent / "demo_images"
NAME_CHARS = 12  # a task's name: "dsb_" + the first characters of the image id
#: The demo backend's basic-auth credentials (LA_BASIC_AUTH_USER / _PASS override them).
DEMO_BACKEND_AUTH = ("label-studio", "demo-backend-secret")
PROJECT_TITLE = "label-assistant demo: DSB 2018 nuclei"
CLASS_NAME = "Nucleus"
#: The demo's label config, with the smart tools (box, clicks, extreme points) that make
#: Label Studio ask the backend for one object's mask; they need it connected as interactive.
LABEL_CONFIG = brush_label_config([CLASS_NAME])
#: The partial-labeling instructions Label Studio shows before labeling.
INSTRUCTIONS = labeling_instructions([CLASS_NAME])
STATE_FILE = "demo.json"


class DemoError(RuntimeError):
    """A step of the demo failed (one line: what and why)."""


def _step(text: str) -> None:
    print(f"==> {text}", flush=True)


def _wait(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _port(preferred: int | None) -> int:
    """``preferred`` when nobody listens there, else any free port."""
    import socket

    if preferred:
        with socket.socket() as sock:
            # As servers bind: a port left in TIME_WAIT by the last run counts as free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", preferred))
                return preferred
            except OSError:
                print(f"    port {preferred} is taken; using another", flush=True)
    return free_port()


# -- 1. sample images -------------------------------------------------------------------------

@dataclass(frozen=True)
class SampleFile:
    name: str
    path: Path  # the image Label Studio gets
    sequence: str | None  # the experiment group: one image per group comes first
    truth: Path | None  # the true instance map (16-bit PNG label map), when known


def load_truth(sample: SampleFile) -> np.ndarray:
    """The sample's true instance map (0 = background, 1..N = nuclei)."""
    if sample.truth is None:
        raise DemoError(f"sample {sample.name} has no true mask")
    return np.asarray(Image.open(sample.truth)).astype(np.int32)


def demo_images() -> list[dict[str, Any]]:
    """The shipped images' manifest rows (id, group, ...), in upload order."""
    try:
        return json.loads((DEMO_IMAGES / "manifest.json").read_text())["images"]
    except (OSError, ValueError, KeyError) as error:
        raise DemoError(f"the demo images are missing from {DEMO_IMAGES}: {error}") from None


def make_samples(folder: Path) -> list[SampleFile]:
    """Copy the shipped images (once) into ``folder/images`` and list them.

    Grey fluorescence images are percentile-stretched to 8 bits on the way (their nuclei sit
    at grey levels 5-20 of 255: near black in a browser); colour images are copied as they
    are. Each task's ``sequence`` is its image's experiment group."""
    from label_assistant.devtools.samples import to_uint8

    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    files = []
    for row in demo_images():
        source = DEMO_IMAGES / "images" / f"{row['id']}.png"
        name = f"dsb_{row['id'][:NAME_CHARS]}"
        path = images / f"{name}.png"
        if not path.exists():
            pixels = np.asarray(Image.open(source))
            if pixels.ndim == 2:
                pixels = to_uint8(pixels)
            # Write-then-rename: a crash never leaves a half-written image to upload.
            tmp = path.with_suffix(".tmp.png")
            Image.fromarray(pixels).save(tmp)
            tmp.replace(path)
        files.append(SampleFile(name, path, str(row["group"]),
                                DEMO_IMAGES / "masks" / f"{row['id']}.png"))
    return files


# -- 2. Label Studio and 3. the backend -------------------------------------------------------

@dataclass
class LabelStudioHandle:
    url: str
    token: str
    local: bool
    username: str | None = None
    password: str | None = None


@contextmanager
def label_studio(folder: Path, port: int | None) -> Iterator[LabelStudioHandle]:
    """The existing Label Studio from the environment, or a local one (started, then stopped)."""
    url = os.environ.get("LABEL_STUDIO_URL", "").strip().rstrip("/")
    if url:
        key = os.environ.get("LABEL_STUDIO_API_KEY", "").strip()
        if not key:
            raise DemoError("LABEL_STUDIO_URL is set but LABEL_STUDIO_API_KEY is not: give the "
                            "token of that Label Studio (Account & Settings -> Access Token)")
        try:
            requests.get(f"{url}/health", timeout=5).raise_for_status()
        except requests.RequestException as error:
            raise DemoError(f"Label Studio at {url} does not answer /health: {error}") from None
        _step(f"Label Studio: using {url} (LABEL_STUDIO_URL)")
        yield LabelStudioHandle(url, key, local=False)
        return
    data_dir = folder / "label-studio"
    if not (data_dir / "label_studio.sqlite3").exists():
        template = Path(os.environ.get("LABEL_STUDIO_TEMPLATE_DIR", "/nonexistent"))
        if (template / "label_studio.sqlite3").exists():
            shutil.rmtree(data_dir, ignore_errors=True)
            copy_data_dir(template, data_dir)
            _step(f"Label Studio: data dir copied from {template}")
        else:
            _step("Label Studio: initialising its data dir (once; 45-163 s on 2 busy cores)")
            scratch = data_dir.with_name(data_dir.name + ".init")
            shutil.rmtree(scratch, ignore_errors=True)
            seconds = init_data_dir(scratch)
            scratch.rename(data_dir)
            print(f"    initialised in {seconds:.0f} s", flush=True)
    server = LabelStudioServer(token=DEFAULT_TOKEN, port=_port(port),
                               document_root=folder / "images")
    with server:
        server.start(data_dir, timeout=180)
        _step(f"Label Studio: started at {server.url} in {server.startup_seconds:.1f} s "
              f"(log {server.log_path})")
        yield LabelStudioHandle(server.url, DEFAULT_TOKEN, local=True,
                                username=DEFAULT_USERNAME, password=DEFAULT_PASSWORD)


@dataclass
class BackendHandle:
    url: str  # where Label Studio reaches it
    workdir: Path
    log: Path
    process: subprocess.Popen = field(repr=False)
    auth: tuple[str, str] = field(default=("", ""), repr=False)  # its basic-auth credentials


@contextmanager
def backend(folder: Path, ls: LabelStudioHandle, port: int | None) -> Iterator[BackendHandle]:
    """``label-assistant serve`` in its own process group; stopped (SIGTERM) on exit."""
    workdir = folder / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.token,
           "HF_HUB_OFFLINE": "1"}
    env.setdefault("LA_TRAIN_AFTER", "3")
    # The backend asks for credentials, as it should on any network (Label Studio sends them).
    env.setdefault("LA_BASIC_AUTH_USER", DEMO_BACKEND_AUTH[0])
    env.setdefault("LA_BASIC_AUTH_PASS", DEMO_BACKEND_AUTH[1])
    # Training uses the package's CPU default (model/config.py): a round of about a minute on
    # 2 cores (49 s of training, 54 s from the third annotation to the verdict, measured with
    # scripts/demo_round.py).
    port = _port(port)
    log = folder / "backend.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "label_assistant.cli", "serve", "--port", str(port),
             "--workdir", str(workdir), "--workers", "1", "--threads", "4"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    local_url = f"http://127.0.0.1:{port}"
    try:
        def healthy() -> bool:
            if process.poll() is not None:
                raise DemoError(f"the backend exited with {process.returncode}; see {log}")
            try:
                return requests.get(f"{local_url}/health", timeout=1).ok
            except requests.RequestException:
                return False

        _wait("the backend's /health", healthy, 120, 0.3)
        url = os.environ.get("LA_DEMO_BACKEND_URL", "").strip().rstrip("/") or local_url
        _step(f"backend: label-assistant serve at {local_url} (work dir {workdir}, log {log})")
        yield BackendHandle(url, workdir, log, process,
                            (env["LA_BASIC_AUTH_USER"], env["LA_BASIC_AUTH_PASS"]))
    finally:
        stop_process_group(process, 30)


# -- 4. the project, 5. backend, pre-labels and ranking ----------------------------------------

def _load_state(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _save_state(folder: Path, state: dict[str, Any]) -> None:
    tmp = folder / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(folder / STATE_FILE)


def ensure_project(client: LabelStudioClient, folder: Path, key: str) -> tuple[int, bool]:
    """The demo project remembered for this Label Studio (``key``: "local" or its URL; the
    local one's port may change between runs), or a new one; (id, reused)."""
    state = _load_state(folder)
    remembered = state.get("projects", {}).get(key)
    if remembered is not None:
        try:
            found = client.get_project(int(remembered))
            if found.get("title") == PROJECT_TITLE:
                wanted = {"label_config": LABEL_CONFIG, **INSTRUCTIONS}
                if any(found.get(k) != v for k, v in wanted.items()):  # an older demo's
                    client.update_project(int(remembered), **wanted)
                return int(remembered), True
        except LabelStudioError:
            pass  # deleted in the meantime: make a new one
    project = client.create_project(
        PROJECT_TITLE, LABEL_CONFIG, **INSTRUCTIONS,
        description="2018 Data Science Bowl nuclei (BBBC038v1, CC0); pre-labels by "
                    "label-assistant")
    state.setdefault("projects", {})[key] = project
    _save_state(folder, state)
    return project, False


def _task_name(task: dict[str, Any]) -> str | None:
    """The sample a task holds: its ``name`` field, or (a crash between upload and naming)
    the file name Label Studio stored, ``/data/upload/<n>/<8 hex>-<name>.png``."""
    data = task.get("data") or {}
    if data.get("name"):
        return str(data["name"])
    stored = str(data.get("image", "")).rsplit("/", 1)[-1]
    stem = stored.rsplit(".", 1)[0]
    return stem.split("-", 1)[1] if "-" in stem else None


def import_samples(client: LabelStudioClient, project: int,
                   samples: list[SampleFile]) -> dict[str, int]:
    """Upload the samples the project lacks and name every task; name -> task id."""
    tasks = {}
    for task in client.list_tasks(project):
        name = _task_name(task)
        if name is not None:
            tasks.setdefault(name, task)
    missing = [s for s in samples if s.name not in tasks]
    if missing:
        for sample, task_id in zip(missing, client.upload_files(project, [s.path for s in missing]),
                                   strict=True):
            tasks[sample.name] = {"id": task_id, "data": {}}
    for sample in samples:
        task = tasks[sample.name]
        fields: dict[str, Any] = {"name": sample.name}
        if sample.sequence is not None:
            fields["sequence"] = sample.sequence
        if any((task.get("data") or {}).get(k) != v for k, v in fields.items()):
            client.update_task_data(project, int(task["id"]), fields)
    return {name: int(task["id"]) for name, task in tasks.items()}


def connect_backend(client: LabelStudioClient, project: int, url: str,
                    auth: tuple[str, str]) -> int:
    """Connect the backend at ``url`` with its credentials; connections left by earlier runs
    go (their address or credentials may be stale)."""
    for old in client.ml_backends(project):
        client.disconnect_backend(int(old["id"]))
    return client.connect_backend(project, url, basic_auth=auth, is_interactive=True)


def retrieve_prelabels(client: LabelStudioClient, project: int, task_ids: list[int]) -> int:
    """Ask for predictions of the tasks that have none; the number of tasks with one."""
    def predicted() -> set[int]:
        return {int(p["task"]) for p in client.predictions(project)}

    if set(task_ids) - predicted():
        client.retrieve_predictions(project)
    return len(set(task_ids) & predicted())


def rank(client: LabelStudioClient, token: str, project: int, workdir: Path) -> int:
    """Rank the unlabeled tasks (``select --project``); the "Next to label" tab's id."""
    from label_assistant.cli import main as cli

    out = workdir / "ranking.json"
    code = cli(["select", "--project", str(project), "--workdir", str(workdir),
                "--label-studio-url", client.url, "--api-key", token, "--json",
                str(out)])
    if code != 0:
        raise DemoError(f"ranking the tasks failed (select exited {code})")
    ranking = json.loads(out.read_text())
    top = ", ".join(f"task {i['task']}" for i in ranking["items"][:5])
    print(f"    {len(ranking['items'])} tasks ranked by {ranking['strategy']}; first: {top}",
          flush=True)
    view = next((v for v in client.list_views(project)
                 if (v.get("data") or {}).get("title") == NEXT_VIEW_TITLE), None)
    if view is None:
        raise DemoError(f"the {NEXT_VIEW_TITLE!r} tab was not created")
    return int(view["id"])


@dataclass
class DemoProject:
    client: LabelStudioClient
    project: int
    reused: bool
    task_ids: dict[str, int]
    view: int
    predicted: int


def set_up(ls: LabelStudioHandle, be: BackendHandle, samples: list[SampleFile],
           folder: Path) -> DemoProject:
    """Steps 4-5 against running servers (idempotent)."""
    client = LabelStudioClient(ls.url, ls.token, timeout=120)
    project, reused = ensure_project(client, folder, "local" if ls.local else ls.url)
    _step(f"project {project} {'reused' if reused else 'created'}: {ls.url}/projects/{project}")
    task_ids = import_samples(client, project, samples)
    groups = len({s.sequence for s in samples})
    print(f"    {len(task_ids)} tasks ({groups} experiment groups as sequences)", flush=True)
    connect_backend(client, project, be.url, be.auth)
    # The Model card's "Start model training on annotation submission", on: Label Studio
    # asks for training every LA_TRAIN_AFTER annotations (the toggle wins over the backend's
    # own count, README "When training starts"), so the card tells what happens.
    client.update_project(project, min_annotations_to_start_training=int(
        os.environ.get("LA_TRAIN_AFTER", "3")))
    _step(f"backend connected to project {project} at {be.url}; retrieving pre-labels")
    started = time.monotonic()
    predicted = retrieve_prelabels(client, project, list(task_ids.values()))
    print(f"    {predicted}/{len(task_ids)} tasks have pre-labels "
          f"({time.monotonic() - started:.1f} s)", flush=True)
    _step("ranking the tasks for labeling")
    view = rank(client, ls.token, project, be.workdir)
    return DemoProject(client, project, reused, task_ids, view, predicted)


# -- DEMO_CHECK: what a person would look at, checked ------------------------------------------

def check(demo: DemoProject, samples: list[SampleFile], be: BackendHandle) -> None:
    """Pre-labels on every task, the tab's first task, one annotation's verdict round trip."""
    from label_assistant.labelmap import instances_to_label_map
    from label_assistant.labelstudio import label_map_to_results, parse_label_config
    from label_assistant.ml_backend.store import Store
    from label_assistant.model.sparsify import sparsify

    client, project = demo.client, demo.project
    predictions = client.predictions(project)
    missing = set(demo.task_ids.values()) - {int(p["task"]) for p in predictions}
    if missing:
        raise DemoError(f"{len(missing)} tasks have no pre-label (see {be.log})")
    kinds = {r.get("type") for p in predictions for r in p.get("result") or []}
    if "brushlabels" not in kinds:
        raise DemoError(f"pre-labels hold no brush masks (result types {sorted(kinds)})")
    versions = sorted({str(p.get("model_version")) for p in predictions})
    print(f"    check: {len(predictions)} pre-labels, versions {versions}", flush=True)
    line = serving_line(client, project, be.workdir)  # what the banner says
    if "Otsu" not in line or versions[0] not in line:
        raise DemoError(f"the banner's line on what serves is wrong: {line}")
    print(f"    check: {line}", flush=True)

    first = client.next_task_as_displayed(project, demo.view)
    if not first or (first.get("data") or {}).get(RANK_FIELD) is None:
        raise DemoError(f"the {NEXT_VIEW_TITLE!r} tab gives no ranked task")
    name = _task_name(first)
    sample = next((s for s in samples if s.name == name and s.truth is not None), None)
    if sample is None:
        raise DemoError(f"the first task to label ({name}) is not a demo image with a mask")
    print(f"    check: {NEXT_VIEW_TITLE!r} starts with task {first['id']} ({name}, rank "
          f"{first['data'][RANK_FIELD]})", flush=True)

    # The annotator: some nuclei drawn fully, background around them, the rest left alone.
    truth = instances_to_label_map(load_truth(sample), separate=True)
    partial = sparsify(truth, 0.3, band=4, seed=0)
    results = label_map_to_results(partial, parse_label_config(LABEL_CONFIG),
                                   include_background=True)
    annotation = client.sdk.annotations.create(id=int(first["id"]), result=results)
    started = time.monotonic()
    status = _wait("the backend's verdict in Label Studio", lambda: client.get_task(
        project, int(first["id"]))["data"].get(STATUS_FIELD), 90)
    seconds = time.monotonic() - started
    rows = [r for r in Store.for_workdir(be.workdir).annotations(str(project))
            if r["annotation_id"] == annotation.id]
    if status != "admitted" or not rows or rows[-1]["state"] != "admitted":
        warnings = client.get_task(project, int(first["id"]))["data"].get(WARNINGS_FIELD)
        raise DemoError(f"annotation {annotation.id} came back {status!r} (store: "
                        f"{[r['state'] for r in rows]}); warnings: {warnings}")
    print(f"    check: annotation {annotation.id} admitted; verdict in Label Studio after "
          f"{seconds:.1f} s", flush=True)


# -- main -------------------------------------------------------------------------------------

def _int_env(name: str, default: int | None) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise DemoError(f"{name} must be a port number, got {raw!r}") from None


def serving_line(client: LabelStudioClient, project: int, workdir: Path) -> str:
    """What pre-labels the annotators now: the version serving in the backend, and the
    pre-label versions Label Studio holds for the unlabeled tasks (with their counts)."""
    from collections import Counter

    from label_assistant.workspace import Workspace

    current = Workspace(workdir).registry(project).current_id()
    serving = "Otsu thresholding (no model promoted yet)" if current is None else \
        f"model {current}"
    unlabeled = {int(t["id"]) for t in client.list_unlabeled_tasks(project)}
    shown = Counter(str(p.get("model_version")) for p in client.predictions(project)
                    if int(p["task"]) in unlabeled)
    held = ", ".join(f"{version} on {n}" for version, n in shown.most_common()) or "none"
    return f"serving {serving}; pre-labels of the unlabeled tasks: {held}"


def _print_welcome(ls: LabelStudioHandle, be: BackendHandle, demo: DemoProject,
                   seconds: float) -> None:
    report = be.workdir.parent / "report"
    login = (f"{ls.username} / {ls.password}  (API token {ls.token})" if ls.local
             else "your own account")
    print(f"""
label-assistant demo is up (this start took {seconds:.0f} s).

  Label Studio  {ls.url}
  login         {login}
  project       {ls.url}/projects/{demo.project}/data?tab={demo.view}
  backend       {be.url}   (log {be.log})
  pre-labels    {serving_line(demo.client, demo.project, be.workdir)}

Open the "{NEXT_VIEW_TITLE}" tab and press "Label Tasks As Displayed": tasks come in the
order label-assistant ranked them (one image per experiment group first); Label Studio shows
the partial-labeling instructions first. Partial labels are fine: paint some nuclei fully
(Nucleus) and Background around them; leave the rest. After
{os.environ.get('LA_TRAIN_AFTER', '3')} admitted annotations a model trains in the background
(this terminal reports it). It serves only if it beats what serves now (Otsu first) on
held-out labeled pixels; then the tasks are ranked again and the next ones get its pre-labels.
Watch the rounds: .venv/bin/label-assistant rounds --workdir {be.workdir} --project {demo.project}
Plots and a page: .venv/bin/label-assistant report --workdir {be.workdir} --project {demo.project}
                  --out {report}

Ctrl-C stops Label Studio and the backend; `make demo` again picks up where you left.
""", flush=True)


def _watch(be: BackendHandle, project: int) -> None:
    """Until Ctrl-C: report new model versions; stop if the backend dies."""
    from label_assistant.workspace import Workspace

    registry = Workspace(be.workdir).registry(project)
    seen = {v.id for v in registry.list()}
    while be.process.poll() is None:
        time.sleep(2)
        for version in registry.list():
            if version.id in seen:
                continue
            seen.add(version.id)
            promotion = version.promotion or {}
            serving = registry.current_id() or "Otsu thresholding"
            verdict = "serves now" if promotion.get("promoted") else \
                f"kept; {serving} still serves"
            print(f"model {version.id} trained for project {project}: {verdict} "
                  f"({promotion.get('reason', 'no verdict recorded')})", flush=True)
    raise DemoError(f"the backend stopped (exit {be.process.returncode}); see {be.log}")


def run(folder: Path, headless: bool) -> None:
    started = time.monotonic()
    ls_port = None if headless else _int_env("LA_DEMO_LS_PORT", 8080)
    be_port = None if headless else _int_env("LA_DEMO_PORT", 9090)
    _step(f"sample images in {folder / 'images'}")
    samples = make_samples(folder)
    with ExitStack() as stack:
        ls = stack.enter_context(label_studio(folder, ls_port))
        be = stack.enter_context(backend(folder, ls, be_port))
        demo = set_up(ls, be, samples, folder)
        if headless:
            check(demo, samples, be)
        else:
            _print_welcome(ls, be, demo, time.monotonic() - started)
            try:
                _watch(be, demo.project)
            except KeyboardInterrupt:
                print("\nstopping Label Studio and the backend", flush=True)
    if headless:
        # Again, from what the first pass left: same project, no second upload.
        _step("second start: the state must be reused")
        with ExitStack() as stack:
            ls = stack.enter_context(label_studio(folder, None))
            be = stack.enter_context(backend(folder, ls, None))
            again = set_up(ls, be, samples, folder)
        if not again.reused or again.project != demo.project:
            raise DemoError(f"the second start made project {again.project} instead of "
                            f"reusing {demo.project}")
        if again.task_ids != demo.task_ids:
            raise DemoError(f"the second start has {len(again.task_ids)} tasks, the first "
                            f"{len(demo.task_ids)}")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> int:
    import logging

    # The steps print what matters; library chatter (every HTTP request) stays out.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    headless = os.environ.get("DEMO_CHECK", "").strip() not in ("", "0")
    # Ctrl-C and a polite kill both end in the cleanup that stops the servers, also when
    # started from a shell that ignored SIGINT for background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    base = Path(os.environ.get("LA_DEMO_DIR") or ROOT / "demo-data")
    folder = (base / "check") if headless else base
    if headless:
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        run(folder.resolve(), headless)
    except (DemoError, LabelStudioError, LabelStudioServerError, OSError) as error:
        print(f"demo: {'check failed' if headless else 'error'}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr)
        return 130
    if headless:
        print(f"demo check passed in {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
