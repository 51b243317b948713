"""What Label Studio sends, parsed: project ids, object ids, label configs, the Label Studio
address of ``/setup``, a task's image reference.

Pure parsing (no I/O), shared by the web app, the worker and ranking, so that every part
reads a request the same way. Everything that names a file or a database row is bounded
here: a project id is a positive integer of at most :data:`MAX_PROJECT_DIGITS` digits (it
names folders), an annotation or task id a non-negative integer within SQLite's int64.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from label_assistant.labelstudio.config import LabelConfig, parse_label_config

#: Digits a project id may have (it names the project's folders; Label Studio's are small).
MAX_PROJECT_DIGITS = 12
#: The largest annotation or task id: SQLite's INTEGER is a signed 64-bit integer.
MAX_ID = 2**63 - 1
#: Characters a ``/setup`` hostname or access token may have.
MAX_URL_CHARS = 2048
MAX_TOKEN_CHARS = 4096


class TaskError(ValueError):
    """A task that can't be used (the message names the task)."""


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters: error messages quote what was sent."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 5]}...{text[-2:]}"


def project_key(value: Any) -> str:
    """Label Studio's project number as a string, from ``"7.1795273793"``, ``7`` or ``{"id": 7}``.

    ``/setup`` and ``/predict`` send ``"<id>.<timestamp>"``; webhooks send the project object.
    The number must be a positive integer of at most :data:`MAX_PROJECT_DIGITS` digits.
    """
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, bool) or value is None:
        raise ValueError("no project id")
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip().split(".", 1)[0]
    else:
        raise ValueError(f"project {short(value)} is not a Label Studio project id like "
                         "'7.1795273793' or 7")
    # ASCII digits only: str.isdigit() is also true for '²' and other scripts' digits.
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"project {short(value)} is not a Label Studio project id like "
                         "'7.1795273793'")
    text = text.lstrip("0")
    if not text or len(text) > MAX_PROJECT_DIGITS:
        raise ValueError(f"project {short(value)} is not a Label Studio project id: it must be "
                         f"a positive integer of at most {MAX_PROJECT_DIGITS} digits")
    return text


def object_id(value: Any, what: str = "id") -> int:
    """An annotation or task id: a JSON integer (not a bool, a float or a string) in
    0..:data:`MAX_ID`; :class:`ValueError` naming ``what`` else."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ID:
        raise ValueError(f"{what} must be a non-negative integer below 2**63, got {short(value)}")
    return value


def setup_hostname(value: Any) -> str | None:
    """The ``hostname`` of ``/setup`` as a base URL without a trailing slash; None when none is
    given (null or blank). :class:`ValueError` unless it is an ``http(s)://host[:port][/path]``
    URL (Label Studio's address: images and results are fetched from and sent to it)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"must be a string (Label Studio's URL), got {type(value).__name__}")
    url = value.strip().rstrip("/")
    if not url:
        return None
    if len(url) > MAX_URL_CHARS:
        raise ValueError(f"is longer than {MAX_URL_CHARS} characters")
    if not url.isascii() or any(c.isspace() or not c.isprintable() or c == "\\" for c in url):
        raise ValueError(f"{short(value)} has spaces, backslashes, control or non-ASCII "
                         "characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number in range)
    except ValueError as error:
        raise ValueError(f"{short(value)} is not a URL ({error})") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{short(value)} is not an http(s) URL with a host, like "
                         "'http://label-studio:8080'")
    if "@" in parts.netloc:
        raise ValueError(f"{short(value)} has user info (user@host); send the token as "
                         "access_token")
    if parts.query or parts.fragment:
        raise ValueError(f"{short(value)} has a ?query or #fragment; Label Studio's base URL "
                         "has none")
    return url


def setup_token(value: Any) -> str | None:
    """The ``access_token`` of ``/setup`` (sent in an ``Authorization`` header); None when none
    is given. :class:`ValueError` unless it is printable ASCII without spaces."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {type(value).__name__}")
    token = value.strip()
    if not token:
        return None
    if len(token) > MAX_TOKEN_CHARS:
        raise ValueError(f"is longer than {MAX_TOKEN_CHARS} characters")
    if not all("!" <= c <= "~" for c in token):
        raise ValueError("must be printable ASCII without spaces (it goes into an HTTP header)")
    return token


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
