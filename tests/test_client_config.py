"""The client's configuration: defaults, paths, and a token that is read once and never shown."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from pydantic import ValidationError

from healer.cloudpilot.client import CloudPilotClient
from healer.cloudpilot.config import QUERY_CALLS, ClientConfig
from healer.cloudpilot.models import Action

TOKEN = "tok-9f8e7d6c5b4a"


class TestDefaults:
    def test_the_default_base_url_is_loopback(self) -> None:
        assert ClientConfig().base_url == "http://127.0.0.1:8931"

    def test_every_call_has_its_documented_default_path(self) -> None:
        paths = ClientConfig().paths

        assert {call: paths.for_call(call) for call in QUERY_CALLS} == {
            "app_meta": "/res/capacity/getappmeta",
            "min_usable": "/pandora/getappminusable",
            "instance_status": "/feiyun/get/instance",
            "hard_limits": "/feiyun/get/hardlimit",
            "disabled": "/feiyun/get/disabled",
            "instance_info": "/paas/instance/getinfo",
            "instance_by_addr": "/shell/get/instance",
            "events": "/alm/selfhealing/geteventlist",
        }
        assert paths.for_call("restart") == "/feiyun/action/instance/restart"
        assert paths.for_call("unfreeze") == "/feiyun/action/instance/unfreeze"
        assert all(paths.for_call(a.value).endswith(f"/{a.value}") for a in Action)

    def test_no_token_means_no_auth_header(self) -> None:
        assert ClientConfig().auth_headers() == {}

    def test_an_unknown_setting_or_path_name_is_an_error(self) -> None:
        with pytest.raises(ValidationError):
            ClientConfig(base_uri="http://127.0.0.1:1")  # type: ignore[call-arg]
        with pytest.raises(ValidationError):
            ClientConfig(paths={"restrat": "/x"})  # type: ignore[arg-type]


class TestTheTokenIsLoadedOnce:
    def test_a_token_from_an_environment_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("CP_TOKEN_TEST", TOKEN)

        config = ClientConfig(token_env="CP_TOKEN_TEST")

        assert config.auth_headers() == {"Authorization": f"Bearer {TOKEN}"}

    def test_a_token_from_a_file_loses_its_trailing_newline(self, tmp_path: Path) -> None:
        path = tmp_path / "token"
        path.write_text(TOKEN + "\n")

        config = ClientConfig(token_file=path, auth_header="X-Api-Key", auth_scheme="")

        assert config.auth_headers() == {"X-Api-Key": TOKEN}

    def test_a_missing_variable_stops_start_up_naming_the_variable(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("CP_TOKEN_ABSENT", raising=False)

        with pytest.raises(ValidationError, match="CP_TOKEN_ABSENT"):
            ClientConfig(token_env="CP_TOKEN_ABSENT")

    def test_a_missing_or_empty_file_stops_start_up(self, tmp_path: Path) -> None:
        with pytest.raises(ValidationError, match="unreadable"):
            ClientConfig(token_file=tmp_path / "absent")
        (tmp_path / "empty").write_text("\n")
        with pytest.raises(ValidationError, match="empty"):
            ClientConfig(token_file=tmp_path / "empty")

    def test_two_token_sources_are_an_error(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("CP_TOKEN_TEST", TOKEN)

        with pytest.raises(ValidationError, match="only one"):
            ClientConfig(token=TOKEN, token_env="CP_TOKEN_TEST")  # type: ignore[arg-type]


class TestUnusableTokensStopStartUp:
    @pytest.mark.parametrize("token", ["", "   "])
    def test_an_empty_token_is_refused_like_an_empty_token_file(self, token: str) -> None:
        with pytest.raises(ValidationError, match="the token is empty") as info:
            ClientConfig(token=token)  # type: ignore[arg-type]

        assert info.value.errors()[0]["loc"] == ("token",)

    @pytest.mark.parametrize("token", ["s3cr\nInjected: 1", "s3cr\r", "s3cré", "s3cr\x00"])
    def test_a_token_that_cannot_go_in_a_header_is_refused_without_showing_it(
        self, token: str
    ) -> None:
        with pytest.raises(ValidationError, match="cannot go in an HTTP header") as info:
            ClientConfig(token=token)  # type: ignore[arg-type]

        assert info.value.errors()[0]["loc"] == ("token",)
        assert "s3cr" not in str(info.value)

    def test_a_token_from_a_variable_is_checked_too(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("CP_TOKEN_TEST", "line1\nline2")

        with pytest.raises(ValidationError, match="token_env has a character that cannot go"):
            ClientConfig(token_env="CP_TOKEN_TEST")

    def test_a_printable_token_with_punctuation_is_accepted(self) -> None:
        config = ClientConfig(token="a.b-c_d~e+f/g=")  # type: ignore[arg-type]

        assert config.auth_headers() == {"Authorization": "Bearer a.b-c_d~e+f/g="}


class TestBaseUrl:
    @pytest.mark.parametrize(
        "url", ["not a url", "ftp://cp.example", "127.0.0.1:8931", "http://", "http://h:99999"]
    )
    def test_anything_but_an_http_url_with_a_host_is_refused(self, url: str) -> None:
        with pytest.raises(ValidationError) as info:
            ClientConfig(base_url=url)

        assert info.value.errors()[0]["loc"] == ("base_url",)

    @pytest.mark.parametrize(
        "url", ["http://127.0.0.1:8931", "https://cloudpilot.example", "http://[::1]:80/api"]
    )
    def test_http_and_https_urls_are_accepted(self, url: str) -> None:
        assert ClientConfig(base_url=url).base_url == url


class TestTheTokenIsNeverShown:
    async def test_neither_config_nor_client_shows_the_token(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.setenv("CP_TOKEN_TEST", TOKEN)
        (tmp_path / "token").write_text(TOKEN)
        configs = [
            ClientConfig(token=TOKEN),  # type: ignore[arg-type]
            ClientConfig(token_env="CP_TOKEN_TEST"),
            ClientConfig(token_file=tmp_path / "token"),
        ]

        for config in configs:
            async with CloudPilotClient(config) as client:
                shown_client = [repr(client), str(client)]
            shown = [
                *shown_client,
                repr(config),
                str(config),
                repr(config.model_dump()),
                config.model_dump_json(),
            ]
            assert config.token is not None and config.token.get_secret_value() == TOKEN
            for text in shown:
                assert TOKEN not in text


class TestTransportChoice:
    def test_the_aiohttp_transport_needs_its_package(self) -> None:
        have = importlib.util.find_spec("httpx_aiohttp") is not None
        if have:
            assert ClientConfig(transport="aiohttp").transport == "aiohttp"
        else:
            with pytest.raises(ValidationError, match="httpx-aiohttp"):
                ClientConfig(transport="aiohttp")

    def test_an_unknown_transport_is_an_error(self) -> None:
        with pytest.raises(ValidationError):
            ClientConfig(transport="curl")  # type: ignore[arg-type]
