"""The README documents every command and shows the settings table the code renders (so a new
one can't go unmentioned), and the pictures it shows are in the repository."""

from __future__ import annotations

import re
from pathlib import Path

from label_assistant.cli import build_parser
from label_assistant.ml_backend.settings import settings_table

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_the_settings_table_is_the_generated_one():
    # Row for row what settings_table() renders; to regenerate it: python -c "from
    # label_assistant.ml_backend.settings import settings_table; print(settings_table())"
    table = settings_table()
    header = table.splitlines()[0]
    assert README.count(header) == 1
    block = README[README.index(header):].split("\n\n", 1)[0]
    assert block.rstrip("\n") == table


def test_every_command_is_in_the_command_table():
    # The registered command names (a module's name may differ: cli/import_.py is `import`).
    commands = build_parser()._subparsers._group_actions[0].choices
    assert "import" in commands
    for command in commands:
        assert f"| `label-assistant {command}" in README, command


def test_the_pictures_exist_and_are_small():
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README)
    assert len(pictures) >= 2
    for picture in pictures:
        path = Path(__file__).resolve().parents[1] / picture
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", picture
        assert path.stat().st_size < 400_000, picture
