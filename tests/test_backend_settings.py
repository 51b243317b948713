"""Backend settings from the environment, and the serve command's checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from label_assistant.cli import main
from label_assistant.ml_backend.settings import VARIABLES, Settings, SettingsError


def test_defaults_and_environment():
    assert Settings.from_env({}).workdir == Path("./work")
    assert Settings.from_env({}).train_after == 0  # unset: only Start Training / the toggle
    s = Settings.from_env({
        "LA_WORKDIR": "/w", "LABEL_STUDIO_URL": "http://ls:8080/", "LABEL_STUDIO_API_KEY": "k",
        "LA_ALLOWED_ORIGINS": "https://a.org, http://b.org:81/", "LA_TRAIN_AFTER": "0",
        "LA_MAX_IMAGE_PIXELS": "1000", "LA_PREDICT_BACKGROUND": "true", "LA_DEVICE": "cpu",
    })
    assert s.workdir == Path("/w") and s.label_studio_url == "http://ls:8080"
    assert s.allowed_origins == ("https://a.org", "http://b.org:81")
    assert (s.train_after, s.max_image_pixels, s.predict_background) == (0, 1000, True)
    assert Settings.from_env(s.to_env()) == s  # what serve hands to its children


def test_to_env_round_trips_settings_that_are_not_the_defaults():
    s = Settings(workdir=Path("/w"), label_studio_url="http://ls:8080",
                 label_studio_api_key="k", train_after=4, train_config=Path("t.json"),
                 strategy="random", sequence_field="movie", sequence_clusters=3,
                 prelabel_ahead=3,
                 background_label="bg", inspection_config=Path("i.json"),
                 predict_background=True, predict_tile=256, device="cuda",
                 allowed_origins=("https://a.org", "http://b.org:81"), max_image_bytes=10,
                 max_image_pixels=20, max_request_bytes=30, fetch_timeout=1.5,
                 image_cache_ttl=2.0, poll_interval=0.25, sink="none",
                 basic_auth_user="u", basic_auth_pass="p", metrics_token="m",
                 max_webhook_bytes=40, image_cache_bytes=50, inference_slots=2, job_nice=5,
                 interactive_cache_bytes=60, dask_scheduler="tcp://scheduler:8786",
                 queue="redis://q.example:6379/1")
    changed = [v.env for v in VARIABLES if getattr(s, v.attr) == v.default]
    assert changed == []  # every variable is exercised
    assert Settings.from_env(s.to_env()) == s


def test_the_dask_scheduler_is_an_address():
    assert Settings.from_env({}).dask_scheduler is None
    assert Settings.from_env({"LA_DASK_SCHEDULER": "sched:8786"}).dask_scheduler == \
        "tcp://sched:8786"
    assert Settings.from_env({"LA_DASK_SCHEDULER": "tls://10.0.0.2:8786/"}).dask_scheduler == \
        "tls://10.0.0.2:8786"
    for bad in ("http://sched:8786", "tcp://sched", "tcp://sched:99999", "tcp://sched:1/x"):
        with pytest.raises(SettingsError, match="LA_DASK_SCHEDULER must be a Dask scheduler"):
            Settings.from_env({"LA_DASK_SCHEDULER": bad})


@pytest.mark.parametrize("variable", VARIABLES, ids=lambda v: v.env)
def test_every_declaration_is_documented_and_its_default_parses(variable):
    assert variable.doc.strip() and variable.shown.strip()
    assert "|" not in variable.doc + variable.shown and "\n" not in variable.doc  # one row
    assert [v.env for v in VARIABLES].count(variable.env) == 1
    assert variable.env.startswith(("LA_", "LABEL_STUDIO_"))
    assert getattr(Settings(), variable.attr) == variable.default
    text = variable.text(variable.default)
    assert variable.read({variable.env: text}) == variable.default
    if text:  # a default with a text form (not None or empty) comes back through the parser
        assert variable.parse(text) == variable.default


def test_every_field_but_train_overrides_is_a_variable():
    assert len(VARIABLES) >= 20
    assert {f.attr for f in VARIABLES} | {"train_overrides"} == set(Settings.__dataclass_fields__)


@pytest.mark.parametrize("env, message", [
    ({"LA_TRAIN_AFTER": "many"}, "LA_TRAIN_AFTER must be an integer"),
    ({"LA_MAX_IMAGE_BYTES": "0"}, "LA_MAX_IMAGE_BYTES must be >= 1"),
    ({"LA_POLL_INTERVAL": "-1"}, "LA_POLL_INTERVAL must be > 0"),
    ({"LA_FETCH_TIMEOUT": "soon"}, "LA_FETCH_TIMEOUT must be a number"),
    ({"LA_PREDICT_TILE": "16"}, "LA_PREDICT_TILE must be >= 32"),
    ({"LA_STRATEGY": "entropy+nope"}, "LA_STRATEGY must be a ranking strategy"),
    ({"LA_QUEUE": "http://redis:6379"}, "LA_QUEUE must be a Redis URL like redis://"),
    ({"LA_QUEUE": "redis://:6379/0"}, "LA_QUEUE must name a host"),
    ({"LA_QUEUE": "redis://redis:port/0"}, "LA_QUEUE must be a Redis URL"),
    ({"LA_QUEUE": "redis://redis:6379/zero"}, "LA_QUEUE must end in a database number"),
])
def test_bad_values_are_one_line_errors(env, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_config_files(tmp_path):
    (tmp_path / "inspect.json").write_text(json.dumps({"severity": {"no_background": "off"}}))
    (tmp_path / "train.json").write_text(json.dumps({"epochs": 3}))
    s = Settings(inspection_config=tmp_path / "inspect.json", train_config=tmp_path / "train.json",
                 train_overrides={"tile": 64}, device="cpu")
    assert s.load_inspection_config().level("no_background") == "off"
    assert s.training_config() == {"epochs": 3, "tile": 64, "device": "cpu"}
    with pytest.raises(SettingsError, match="can't read"):
        Settings(train_config=tmp_path / "missing.json").training_config()


def test_serve_refuses_bad_settings_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LA_INSPECTION_CONFIG", str(tmp_path / "missing.json"))
    assert main(["serve", "--workdir", str(tmp_path), "--port", "9"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("label-assistant serve: error: LA_INSPECTION_CONFIG") and "\n" not in err
    assert main(["serve", "--port", "70000"]) == 2
