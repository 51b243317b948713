"""Authentication (ml_backend.auth): basic auth on every route but /health, a bearer token
for /metrics, constant-time checks, one-line refusal of half a configuration."""

from __future__ import annotations

import base64

import pytest
from test_backend_support import CONFIG

from label_assistant.ml_backend.app import create_app
from label_assistant.ml_backend.auth import AuthSettingsError, refusal
from label_assistant.ml_backend.settings import Settings

ROUTES = [("GET", "/metrics"), ("GET", "/versions"), ("POST", "/setup"), ("POST", "/predict"),
          ("POST", "/webhook"), ("POST", "/train"), ("GET", "/nope"), ("OPTIONS", "/setup")]


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(workdir=tmp_path / "work", basic_auth_user="ls", basic_auth_pass="s3cr:t",
                    metrics_token="prom")


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_but_health_needs_the_credentials(settings, method, path):
    client = create_app(settings).test_client()
    for headers in ({}, _basic("ls", "wrong"), _basic("other", "s3cr:t"),
                    {"Authorization": "Basic !!!"}, {"Authorization": "Bearer s3cr:t"}):
        response = client.open(path, method=method, headers=headers, json={})
        assert response.status_code == 401, (headers, response.status_code)
        assert response.headers["WWW-Authenticate"].startswith("Basic realm=")
        assert "authentication required" in response.json["error"]
    with_auth = client.open(path, method=method, headers=_basic("ls", "s3cr:t"), json={})
    assert with_auth.status_code != 401
    assert client.get("/health").status_code == 200  # Label Studio and health checks


def test_the_right_credentials_reach_the_protocol(settings):
    client = create_app(settings).test_client()
    body = {"project": "3.1", "schema": CONFIG, "hostname": "http://127.0.0.1:9"}
    assert client.post("/setup", json=body, headers=_basic("ls", "s3cr:t")).status_code == 200


def test_metrics_take_the_bearer_token_or_the_basic_credentials(settings, tmp_path):
    client = create_app(settings).test_client()
    assert client.get("/metrics", headers={"Authorization": "Bearer prom"}).status_code == 200
    assert client.get("/metrics", headers=_basic("ls", "s3cr:t")).status_code == 200
    assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    only_token = Settings(workdir=tmp_path / "w2", metrics_token="prom")
    open_client = create_app(only_token).test_client()
    response = open_client.get("/metrics")
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith(
        "Bearer")
    assert open_client.post("/setup", json={}).status_code == 400  # the rest stays open


def test_without_credentials_configured_nothing_is_asked(tmp_path):
    assert refusal(Settings(workdir=tmp_path), "/webhook", None) is None


def test_half_a_configuration_is_refused(tmp_path, capsys, monkeypatch):
    with pytest.raises(AuthSettingsError, match="both LA_BASIC_AUTH_USER"):
        create_app(Settings(workdir=tmp_path, basic_auth_user="ls"))
    from label_assistant.cli import main

    monkeypatch.setenv("LA_BASIC_AUTH_PASS", "p")
    monkeypatch.delenv("LA_BASIC_AUTH_USER", raising=False)
    assert main(["serve", "--workdir", str(tmp_path / "w"), "--port", "9"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "LA_BASIC_AUTH_USER" in err
