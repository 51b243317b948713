"""What Label Studio sends, parsed: project ids, label configs, a task's image reference.

Pure parsing (no I/O), shared by the web app, the worker and ranking, so that every part
reads a request the same way.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from label_assistant.labelstudio.config import LabelConfig, parse_label_config


class TaskError(ValueError):
    """A task that can't be used (the message names the task)."""


def project_key(value: Any) -> str:
    """Label Studio's project number as a string, from ``"7.1795273793"``, ``7`` or ``{"id": 7}``.

    ``/setup`` and ``/predict`` send ``"<id>.<timestamp>"``; webhooks send the project object.
    """
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, bool) or value is None:
        raise ValueError("no project id")
    if isinstance(value, int):
        return str(value)
    text = str(value).strip().split(".", 1)[0]
    if not text.isdigit():
        raise ValueError(f"project {value!r} is not a Label Studio project id like '7.1795273793'")
    return str(int(text))


@lru_cache(maxsize=64)
def load_label_config(xml: str, background_label: str = "Background") -> LabelConfig:
    """:func:`parse_label_config`, cached: Label Studio sends the same config with every call."""
    return parse_label_config(xml, background_label=background_label)


def task_image_url(task: Any, config: LabelConfig) -> str:
    """The task's image reference (``task["data"][<the Image tag's $field>]``)."""
    if not isinstance(task, dict):
        raise TaskError(f"a task must be an object, got {type(task).__name__}")
    data = task.get("data")
    if not isinstance(data, dict) or config.data_key not in data:
        raise TaskError(f"task {task.get('id')} has no data field {config.data_key!r} "
                        "(the label config's <Image value=\"$...\">)")
    return data[config.data_key]
