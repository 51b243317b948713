import subprocess
import sys

from label_assistant.cli import build_parser, main


def test_help_lists_commands_and_exits_zero():
    out = subprocess.run(
        [sys.executable, "-m", "label_assistant.cli", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0
    assert "label-assistant" in out.stdout


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out


def test_every_command_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, subparser in sub.choices.items():
        assert subparser.format_help(), name
        assert subparser.description or subparser.format_usage(), name
