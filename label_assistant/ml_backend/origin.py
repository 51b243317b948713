"""Which Label Studio a project talks to, and with which token: the one resolver.

Three places can name a Label Studio: an explicit argument (``select --label-studio-url``),
the project's ``/setup`` (``hostname`` and ``access_token``, stored together), and the
settings (``LABEL_STUDIO_URL`` and ``LABEL_STUDIO_API_KEY``). :func:`project_origin` picks
the address in that order, and the token that belongs to it:

- the explicit token, when one is given (``select --api-key``);
- otherwise the token of a pair whose address has the same origin (scheme, host, port):
  the ``/setup`` pair first, then the configured pair.

A token is never paired with another origin than the one it came with. Image fetching
(:mod:`.fetch`), the Label Studio client of the sinks and ranking, and ``select --project``
all resolve through here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> str:
    """``scheme://host[:port]``, lower-cased, default ports dropped; '' for no host."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if not host:
        return ""
    try:
        port = parts.port
    except ValueError:
        return ""
    if ":" in host:
        host = f"[{host}]"  # IPv6
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


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
        token = next((t for u, t, _ in pairs if u and t and origin_of(u) == origin_of(chosen)),
                     None)
    return Origin(chosen, token, source)
