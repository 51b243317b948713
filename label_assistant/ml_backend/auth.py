"""Who may call the backend: HTTP basic auth on every route but ``/health``, and an optional
bearer token for ``/metrics``. Pure: the app hands in the path and the ``Authorization``
header.

With ``LA_BASIC_AUTH_USER`` and ``LA_BASIC_AUTH_PASS`` set (Label Studio's "Use Basic
Authentication" when connecting the model sends them), a request without them, or with other
ones, is refused with 401 and ``WWW-Authenticate: Basic``. ``LA_METRICS_TOKEN`` lets
Prometheus scrape ``/metrics`` with ``Authorization: Bearer <token>`` (basic auth works there
too). ``/health`` (and ``/``) stay open: Label Studio and container health checks call them.
Both comparisons run in constant time (:func:`hmac.compare_digest`).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Any

#: Routes anyone may call.
OPEN_PATHS = ("/health", "/")
REALM = "label-assistant"


class AuthSettingsError(ValueError):
    """Auth settings that can't be used (a user without a password, or the reverse)."""


def check_settings(settings: Any) -> None:
    """Refuse half a basic-auth configuration (it would silently leave the backend open)."""
    if bool(settings.basic_auth_user) != bool(settings.basic_auth_pass):
        raise AuthSettingsError("set both LA_BASIC_AUTH_USER and LA_BASIC_AUTH_PASS, or neither")


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"),
                               expected.encode("utf-8", "surrogatepass"))


def _basic(header: str) -> tuple[str, str] | None:
    """``(user, password)`` of a ``Basic`` header, or None when it isn't one."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def refusal(settings: Any, path: str, authorization: str | None) -> str | None:
    """None when the request may go on, else the ``WWW-Authenticate`` challenge to answer a
    401 with."""
    if path in OPEN_PATHS:
        return None
    header = authorization or ""
    if path == "/metrics" and settings.metrics_token:
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and _same(token.strip(), settings.metrics_token):
            return None
        if not settings.basic_auth_user:
            return f'Bearer realm="{REALM}"'
    if not settings.basic_auth_user:
        return None
    given = _basic(header)
    # Both compared, always: the time taken does not say which one was wrong.
    ok = given is not None and _same(given[0], settings.basic_auth_user) & \
        _same(given[1], settings.basic_auth_pass)
    return None if ok else f'Basic realm="{REALM}", charset="UTF-8"'
