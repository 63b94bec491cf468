"""``[push]`` settings and credentials: defaults, validation, the environment and a secrets file."""

from __future__ import annotations

from pathlib import Path

import pytest

from signalloop.config import load_settings, settings_from_dict
from signalloop.diagnose import push_command
from signalloop.errors import ConfigError, CredentialError
from signalloop.push.send import _credential


def test_defaults_need_no_push_table() -> None:
    s = settings_from_dict({})
    assert not s.push.configured and not s.push.live
    assert s.push.meta.event_name("sql") == "sql"
    assert "hs_google_click_id" in s.push.fields["gclid"]


def test_validation_names_the_key() -> None:
    with pytest.raises(ConfigError, match="time_zone"):
        settings_from_dict({"push": {"google": {"time_zone": "Mars/Olympus"}}})
    with pytest.raises(ConfigError, match="customer ids"):
        settings_from_dict({"push": {"google": {"customer_id": "abc"}}})
    with pytest.raises(ConfigError, match=r"unknown \[push\.meta\] key"):
        settings_from_dict({"push": {"meta": {"pixel": "1"}}})
    with pytest.raises(ConfigError, match="live"):
        settings_from_dict({"push": {"live": "yes"}})
    s = settings_from_dict({"push": {"google": {"customer_id": "123-456-7890"}}})
    assert s.push.google.customer_id == "1234567890"


def test_credentials_from_the_environment_else_the_secrets_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "secrets.toml").write_text('[meta]\naccess_token = "from-file"\n')
    cfg = tmp_path / "signalloop.toml"
    cfg.write_text('[push]\nsecrets = "secrets.toml"\n')
    monkeypatch.delenv("SIGNALLOOP_META_ACCESS_TOKEN", raising=False)
    monkeypatch.delenv("SIGNALLOOP_GOOGLE_DEVELOPER_TOKEN", raising=False)
    s = load_settings(cfg)
    assert s.push.secrets == str(tmp_path / "secrets.toml")  # beside the config file
    assert s.push.credential("meta", "access_token") == "from-file"
    monkeypatch.setenv("SIGNALLOOP_META_ACCESS_TOKEN", "from-env")
    assert s.push.credential("meta", "access_token") == "from-env"
    with pytest.raises(CredentialError) as exc:
        _credential(s, "google", "developer_token", "Google Ads developer token")
    assert "SIGNALLOOP_GOOGLE_DEVELOPER_TOKEN" in str(exc.value)
    assert "secrets file" in str(exc.value)


def test_a_broken_secrets_file_never_quotes_its_content(tmp_path: Path) -> None:
    (tmp_path / "secrets.toml").write_text('[meta]\naccess_token = "sekrit-value\n')
    s = settings_from_dict({"push": {"secrets": str(tmp_path / "secrets.toml")}})
    with pytest.raises(ConfigError) as exc:
        s.push.credential("meta", "access_token")
    assert "sekrit" not in str(exc.value)


def test_feedback_diagnosis_names_the_command_per_platform() -> None:
    assert push_command("meta").startswith("signalloop push meta")
    assert push_command("google").startswith("signalloop push google")
    assert "signalloop push " not in push_command(None)
