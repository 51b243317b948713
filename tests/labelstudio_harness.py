"""Pytest fixtures that run a real Label Studio 1.23.2 (from ``.ls-venv``) on 127.0.0.1.

Use in a test module::

    from labelstudio_harness import *  # noqa: F403

    pytestmark = pytest.mark.labelstudio

- ``ls_template`` (session): a data dir initialised once per session (25-65 s on 2 busy
  cores). Set ``LABEL_STUDIO_TEMPLATE_DIR`` to keep it between sessions (initialised there
  when absent, reused when initialised; it is only ever copied, never started).
- ``labelstudio`` (function): a fresh copy of the template and its own server (~4-5 s).
- ``labelstudio_module`` (module): one server for the module; tests isolate themselves by
  creating their own project (cheaper: ~0.1 s per project).

Both yield a :class:`LabelStudioInstance`. Without a Label Studio executable the tests are
skipped with the reason (how to create ``.ls-venv``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from label_studio_sdk import LabelStudio

from label_assistant.devtools.labelstudio_server import (
    DEFAULT_TOKEN,
    LabelStudioNotFound,
    LabelStudioServer,
    copy_data_dir,
    find_label_studio,
    init_data_dir,
)
from label_assistant.labelstudio.client import LabelStudioClient

__all__ = [
    "BRUSH_CONFIG", "LabelStudioInstance", "labelstudio", "labelstudio_module", "ls_template",
    "signup",
]

BRUSH_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="tag" toName="image">
    <Label value="Background" background="#444444"/>
    <Label value="Cell" background="#e53935"/>
  </BrushLabels>
</View>"""


@dataclass
class LabelStudioInstance:
    """A running Label Studio: where it is, how to call it, and where it may read files."""

    url: str
    token: str
    sdk: LabelStudio
    client: LabelStudioClient
    server: LabelStudioServer
    document_root: Path  # LOCAL_FILES_DOCUMENT_ROOT: put images here for local storage

    def __iter__(self):
        """``url, token, sdk = instance``."""
        return iter((self.url, self.token, self.sdk))


_template: Path | None = None  # one per session, even when several modules import the fixture


@pytest.fixture(scope="session")
def ls_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An initialised Label Studio data dir to copy (made once per session)."""
    global _template
    try:
        find_label_studio()
    except LabelStudioNotFound as error:
        pytest.skip(str(error))
    if _template is None:
        configured = os.environ.get("LABEL_STUDIO_TEMPLATE_DIR")
        path = Path(configured) if configured else tmp_path_factory.mktemp("ls") / "template"
        if not (path / "label_studio.sqlite3").exists():
            _init_atomically(path)
        _template = path
    return _template


def _init_atomically(path: Path) -> None:
    """Initialise beside ``path`` and rename: a session running at the same time never
    copies a half-made template (the loser of the race keeps the winner's)."""
    scratch = path.with_name(f"{path.name}.init-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    seconds = init_data_dir(scratch)
    print(f"\nlabel-studio init: {seconds:.1f} s")
    try:
        scratch.rename(path)
    except OSError:
        shutil.rmtree(scratch, ignore_errors=True)
        if not (path / "label_studio.sqlite3").exists():
            raise


def _run(template: Path, root: Path) -> Iterator[LabelStudioInstance]:
    data_dir = copy_data_dir(template, root / "ls-data")
    files = root / "ls-files"
    files.mkdir()
    with LabelStudioServer(token=DEFAULT_TOKEN, document_root=files) as server:
        server.start(data_dir)
        print(f"\nlabel-studio start: {server.startup_seconds:.1f} s at {server.url}")
        yield LabelStudioInstance(
            url=server.url,
            token=server.token,
            sdk=LabelStudio(base_url=server.url, api_key=server.token),
            client=LabelStudioClient(server.url, server.token),
            server=server,
            document_root=files,
        )


@pytest.fixture
def labelstudio(ls_template: Path, tmp_path: Path) -> Iterator[LabelStudioInstance]:
    """A Label Studio server of this test's own."""
    yield from _run(ls_template, tmp_path)


@pytest.fixture(scope="module")
def labelstudio_module(
    ls_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LabelStudioInstance]:
    """A Label Studio server shared by the tests of one module."""
    yield from _run(ls_template, tmp_path_factory.mktemp("lsmod"))


def signup(ls: LabelStudioInstance, email: str) -> LabelStudioClient:
    """A new user of the organization (the sign-up form, as a person would), with a client
    on their own API token (Label Studio makes one per user; read through their session)."""
    import requests

    session = requests.Session()
    session.get(f"{ls.url}/user/signup/", timeout=30)
    answer = session.post(f"{ls.url}/user/signup/", timeout=30,
                          data={"email": email, "password": "annotator-secret-1",
                                "csrfmiddlewaretoken": session.cookies["csrftoken"]},
                          headers={"Referer": f"{ls.url}/user/signup/"})
    answer.raise_for_status()
    token = session.get(f"{ls.url}/api/current-user/token", timeout=30).json()["token"]
    return LabelStudioClient(ls.url, token)
