"""The README documents every command and every setting (so a new one can't go unmentioned),
and the pictures it shows are in the repository."""

from __future__ import annotations

import re
from pathlib import Path

from label_assistant.cli import _command_modules
from label_assistant.ml_backend.settings import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _all_setting_variables() -> set[str]:
    # Every optional field given a value, so that to_env names every variable.
    settings = Settings(label_studio_url="http://x", label_studio_api_key="k",
                        allowed_origins=("http://y",), inspection_config="i.json",
                        train_config="t.json", device="cpu", sink="none")
    return set(settings.to_env())


def test_every_setting_is_in_the_settings_table():
    variables = _all_setting_variables()
    assert len(variables) >= 20
    table = {m.group(1) for m in re.finditer(r"^\| `([A-Z_]+)` \|", README, re.MULTILINE)}
    assert variables - table == set()


def test_every_command_is_in_the_command_table():
    for command in _command_modules():
        assert f"| `label-assistant {command}" in README, command


def test_the_pictures_exist_and_are_small():
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README)
    assert len(pictures) >= 2
    for picture in pictures:
        path = Path(__file__).resolve().parents[1] / picture
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", picture
        assert path.stat().st_size < 400_000, picture
