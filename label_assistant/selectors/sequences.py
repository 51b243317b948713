"""Sequence ids of pool images: from a task data field, or from a file-name pattern.

Images of one time-lapse sequence look alike, so labeling one per sequence first covers the
data set best (Schilling et al. 2021: 32 images, one per sequence, 80.6 Dice vs 77.7 random).
An image without a sequence id is its own sequence, with the id ``own_sequence_id(i, name)``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

#: Own sequence ids start with this, so they can't be mistaken for a data field value.
OWN_PREFIX = "#"


class SequencePatternError(ValueError):
    """The sequence pattern is not a valid regular expression, or the inputs don't line up."""


def own_sequence_id(index: int, name: str) -> str:
    """The id of an image that belongs to no named sequence (unique by its pool index)."""
    return f"{OWN_PREFIX}{index}:{name}"


def is_own_sequence(sequence_id: str) -> bool:
    """True for ids made by :func:`own_sequence_id`."""
    return sequence_id.startswith(OWN_PREFIX)


def compile_pattern(regex: str) -> re.Pattern[str]:
    """Compile a sequence pattern; the id is group ``seq``, else group 1, else the match."""
    try:
        return re.compile(regex)
    except re.error as err:
        raise SequencePatternError(f"invalid sequence pattern {regex!r}: {err}") from None


def _from_match(pattern: re.Pattern[str], name: str) -> str | None:
    match = pattern.search(name)
    if match is None:
        return None
    if "seq" in pattern.groupindex:
        value = match.group("seq")
    elif pattern.groups:
        value = match.group(1)
    else:
        value = match.group(0)
    return value or None


def _from_data(item: Mapping[str, Any] | None, field: str) -> str | None:
    if not item:
        return None
    value = item.get(field)
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def sequence_ids(
    names: Sequence[str],
    *,
    data: Sequence[Mapping[str, Any] | None] | None = None,
    field: str = "sequence",
    regex: str | None = None,
) -> list[str]:
    """One sequence id per name, in order.

    The task data ``field`` wins where it holds a non-empty value; else ``regex`` is searched
    in the name (``re.search``; the named group ``seq``, else the first group, else the whole
    match); else the image is its own sequence.
    """
    if data is not None and len(data) != len(names):
        raise SequencePatternError(f"{len(data)} data items for {len(names)} names")
    pattern = compile_pattern(regex) if regex is not None else None
    ids = []
    for i, name in enumerate(names):
        seq = _from_data(data[i], field) if data is not None else None
        if seq is None and pattern is not None:
            seq = _from_match(pattern, name)
        ids.append(seq if seq is not None else own_sequence_id(i, name))
    return ids
