"""Which Label Studio a project talks to, and with which token: the one resolver.

Three places can name a Label Studio: an explicit argument (``select --label-studio-url``),
the project's ``/setup`` (``hostname`` and ``access_token``, stored together), and the
settings (``LABEL_STUDIO_URL`` and ``LABEL_STUDIO_API_KEY``). :func:`project_origin` picks
the address in that order, and the token that belongs to it:

- the explicit token, when one is given (``select --api-key``);
- otherwise the token of a pair whose address has the same origin (scheme, host, port):
  the ``/setup`` pair first, then the configured pair.

A token is never paired with another origin than the one it came with: a ``/setup`` that
names another host without a token gets no token (not the previous ``/setup``'s, not the
configured one). Image fetching (:mod:`.fetch`), the Label Studio client of the sinks and
ranking, and ``select --project`` all resolve through here.

Origins are read by :func:`split_origin`, which refuses URLs that two URL parsers could read
differently (``urllib.parse`` decides the origin check, urllib3 what requests connects to):
control characters or whitespace other than a space anywhere; a backslash, ``@`` (user
info), ``%``, a space or a non-ASCII character in the authority; or parses that disagree on
scheme, host or port. Such a URL has no origin (:func:`origin_of` gives ``''``), so no token
is ever paired with it, not even one that came with it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_AUTHORITY = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(?P<port>[0-9]{1,5}))?")


class UnsafeURL(ValueError):
    """A URL whose origin can't be decided safely; the message says why (no URL in it)."""


def _has_control(text: str) -> bool:
    return any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text)


def split_origin(url: str) -> tuple[str, str, int | None]:
    """``(scheme, host, port)`` of an absolute URL, lower-cased, default ports dropped (None).

    Raises :class:`UnsafeURL` for anything two URL parsers could read differently (see the
    module doc) and for URLs without ``scheme://host``.
    """
    if not isinstance(url, str):
        raise UnsafeURL("not a string")
    if _has_control(url):
        raise UnsafeURL("a control character (tab, newline, ...) in the URL")
    if any(c.isspace() and c != " " for c in url):
        raise UnsafeURL("a whitespace character in the URL")
    scheme, sep, rest = url.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme):
        raise UnsafeURL("not an absolute URL (scheme://host)")
    # The authority as urllib.parse delimits it: up to the first '/', '?' or '#'. urllib3
    # (and browsers) also end it at a backslash, so one there makes the parsers disagree.
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "\\" in authority:
        raise UnsafeURL("a backslash in the host part")
    if "@" in authority:
        raise UnsafeURL("user info (@) in the host part")
    if not authority.isascii():
        raise UnsafeURL("a non-ASCII character in the host part")
    if " " in authority or "%" in authority:
        raise UnsafeURL("a space or '%' in the host part")
    match = _AUTHORITY.fullmatch(authority)
    if not match:
        raise UnsafeURL("a malformed host or port")
    host = match.group("host").lower()
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise UnsafeURL("a malformed IPv6 address") from None
        host = host[1:-1]
    port = int(match.group("port")) if match.group("port") else None
    if port is not None and not 0 < port <= 65535:
        raise UnsafeURL(f"port {port} is out of range")
    scheme = scheme.lower()
    if port == _DEFAULT_PORTS.get(scheme):
        port = None
    # The parse that decides (urllib.parse) and the one requests connects with (urllib3)
    # must agree; the checks above should make them, this makes sure.
    try:
        parts = urlsplit(url)
        ours = (parts.scheme.lower(), (parts.hostname or "").lower(), parts.port)
        from urllib3.util import parse_url

        theirs = parse_url(url)
        connects = ((theirs.scheme or "").lower(), (theirs.host or "").strip("[]").lower(),
                    theirs.port)
    except ValueError:  # urllib3's LocationParseError is a ValueError too
        raise UnsafeURL("the URL can't be parsed") from None
    ours = (ours[0], ours[1], None if ours[2] == _DEFAULT_PORTS.get(ours[0]) else ours[2])
    connects = (connects[0], connects[1],
                None if connects[2] == _DEFAULT_PORTS.get(connects[0]) else connects[2])
    if ours != (scheme, host, port) or connects != ours:
        raise UnsafeURL("URL parsers disagree on its host")
    return scheme, host, port


def format_origin(scheme: str, host: str, port: int | None) -> str:
    """``scheme://host[:port]`` (IPv6 hosts in brackets)."""
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}" if port is None else f"{scheme}://{host}:{port}"


def origin_of(url: str) -> str:
    """``scheme://host[:port]``, lower-cased, default ports dropped; '' for no host, and for
    a URL :func:`split_origin` refuses (parsers could disagree on its host)."""
    try:
        return format_origin(*split_origin(url))
    except UnsafeURL:
        return ""


@dataclass(frozen=True)
class Origin:
    """A Label Studio address (no trailing slash) and the token that belongs to it."""

    url: str
    token: str | None
    source: str  # "argument", "setup" or "settings": where the address came from

    @property
    def origin(self) -> str:
        return origin_of(self.url)


def _clean(url: Any) -> str | None:
    return url.strip().rstrip("/") or None if isinstance(url, str) else None


def project_origin(settings: Any, project: Mapping[str, Any] | None = None, *,
                   url: str | None = None, token: str | None = None) -> Origin | None:
    """The project's Label Studio (see the module doc); None when no address is known.

    ``project`` is the store's project row (``hostname``, ``token`` from ``/setup``);
    ``url`` / ``token`` an explicit choice.
    """
    project = project or {}
    pairs = [(_clean(project.get("hostname")), project.get("token") or None, "setup"),
             (_clean(settings.label_studio_url), settings.label_studio_api_key or None,
              "settings")]
    chosen = _clean(url)
    source = "argument"
    if chosen is None:  # an explicit token alone goes with the address found
        chosen, source = next(((u, s) for u, _, s in pairs if u), (None, ""))
    if chosen is None:
        return None
    if not token:
        home = origin_of(chosen)  # '' for a URL with no safe origin: no token at all
        token = next((t for u, t, _ in pairs if home and u and t and origin_of(u) == home),
                     None)
    return Origin(chosen, token, source)
