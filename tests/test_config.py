"""The daemon's configuration: defaults on loopback, errors that name the key, env overrides."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from healer.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "healer.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_point_at_the_loopback_simulator_and_an_sqlite_file() -> None:
    config = load_config(None)

    assert config.cloudpilot.base_url.startswith("http://127.0.0.1:")
    assert config.store_url.startswith("sqlite:///")
    assert config.http.host == "127.0.0.1"
    assert config.poll_interval == timedelta(seconds=10)


def test_the_shipped_example_config_loads() -> None:
    config = load_config(ROOT / "examples" / "healer.yaml")

    assert config.enrollment.apps[0] == "app-0001"
    assert config.http.admin_token_env == "HEALER_ADMIN_TOKEN"


def test_an_unknown_key_is_named_with_its_path(tmp_path: Path) -> None:
    path = write(tmp_path, "guard:\n  max_in_fligth: 2\n")

    with pytest.raises(ConfigError) as info:
        load_config(path)

    assert "guard.max_in_fligth" in str(info.value)
    assert str(path) in str(info.value)


def test_a_bad_duration_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "poll_interval: 10 seconds\n")

    with pytest.raises(ConfigError) as info:
        load_config(path)

    assert "poll_interval" in str(info.value)


def test_a_zero_poll_interval_is_refused_on_that_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "poll_interval: 0s\n"))

    assert "  poll_interval: Value error, must be longer than 0s" in str(info.value)


def test_a_listen_address_without_port_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"http\.listen|listen"):
        load_config(write(tmp_path, "http: {listen: localhost}\n"))


def test_a_missing_file_and_a_non_mapping_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "a: [1, 2\n"))


def test_a_token_env_that_is_unset_stops_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HEALER_TEST_NO_SUCH_TOKEN", raising=False)
    path = write(tmp_path, "cloudpilot: {token_env: HEALER_TEST_NO_SUCH_TOKEN}\n")

    with pytest.raises(ConfigError, match="cloudpilot"):
        load_config(path)


def test_environment_overrides_win_over_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "poll_interval: 10s\ncloudpilot: {base_url: 'http://127.0.0.1:1'}\n")
    monkeypatch.setenv("HEALER_POLL_INTERVAL", "30s")
    monkeypatch.setenv("HEALER_CLOUDPILOT__BASE_URL", "http://127.0.0.1:2")

    config = load_config(path)

    assert config.poll_interval == timedelta(seconds=30)
    assert config.cloudpilot.base_url == "http://127.0.0.1:2"


def test_a_bad_environment_override_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEALER_CONCURRENCY", "many")

    with pytest.raises(ConfigError, match="concurrency"):
        load_config(None)


def test_the_apps_file_skips_comments_blank_lines_and_duplicates(tmp_path: Path) -> None:
    apps = tmp_path / "apps.txt"
    apps.write_text("# enrolled\napp-1\n\napp-2  # the second\napp-1\n", encoding="utf-8")
    path = write(tmp_path, f"enrollment: {{apps: [app-0], apps_file: '{apps}'}}\n")

    assert load_config(path).enrollment.read() == ["app-0", "app-1", "app-2"]


def test_the_admin_token_comes_from_a_file_and_never_shows_in_repr(tmp_path: Path) -> None:
    token = tmp_path / "admin"
    token.write_text("s3cret-admin-token\n", encoding="utf-8")
    config = load_config(write(tmp_path, f"http: {{admin_token_file: '{token}'}}\n"))

    resolved = config.http.resolved_admin_token()

    assert resolved is not None and resolved.get_secret_value() == "s3cret-admin-token"
    assert "s3cret" not in repr(config)


# -- maintenance windows ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bounds",
    ["start: 22:00\n      end: 22:00", "start: 2026-05-01T00:00\n      end: 2026-05-01T00:00"],
)
def test_a_maintenance_window_whose_start_equals_its_end_is_an_error_naming_the_key(
    tmp_path: Path, bounds: str
) -> None:
    path = write(
        tmp_path,
        f"guard:\n  maintenance_windows:\n    - name: deploys\n      {bounds}\n",
    )

    with pytest.raises(ConfigError) as info:
        load_config(path)

    assert "guard.maintenance_windows.0.end:" in str(info.value)
    assert "end equals start" in str(info.value)


def test_a_window_written_with_the_old_app_ids_key_still_silences_those_apps(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        "guard:\n"
        "  maintenance_windows:\n"
        "    - name: nightly\n"
        "      select: {product: [search], app_ids: ['web-*'], exclude_app_ids: [web-9]}\n"
        "      timezone: Asia/Shanghai\n"
        "      start: 22:00\n"
        "      end: 02:00\n",
    )

    (window,) = load_config(path).guard.maintenance_windows

    assert window.select.model_dump(exclude_none=True) == {
        "product": ["search"],
        "app_id": ["web-*"],
        "exclude_app_ids": ["web-9"],
    }


def test_a_window_select_takes_the_policy_selector_and_names_a_bad_key(tmp_path: Path) -> None:
    good = write(
        tmp_path,
        "guard:\n  maintenance_windows:\n"
        "    - {start: '01:00', end: '02:00',\n"
        "       select: {service_level: 1, exclude: {cluster: bj}}}\n",
    )
    (window,) = load_config(good).guard.maintenance_windows
    assert window.select.exclude is not None and window.select.exclude.cluster == ["bj"]

    bad = write(
        tmp_path,
        "guard:\n  maintenance_windows:\n"
        "    - {start: '01:00', end: '02:00', select: {prodcut: [search]}}\n",
    )
    with pytest.raises(ConfigError, match=r"guard\.maintenance_windows\.0\.select\.prodcut"):
        load_config(bad)


# -- the admin token ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("http", "env", "message"),
    [
        ("{admin_token_env: HEALER_TEST_NO_SUCH_TOKEN}", {}, "http.admin_token_env"),
        ("{admin_token_env: HEALER_TEST_EMPTY}", {"HEALER_TEST_EMPTY": "  "}, "admin_token_env"),
        ("{admin_token_file: '{empty}'}", {}, "http.admin_token_file"),
        ("{admin_token_file: '{missing}'}", {}, "cannot read"),
        ("{admin_token: ''}", {}, "http.admin_token is empty"),
        ("{admin_token_env: ''}", {}, "http.admin_token_env: '' is empty"),
        ("{admin_token_file: '{two_lines}'}", {}, "a token is one word"),
        ("{admin_token_file: /dev/zero}", {}, "not a regular file"),
        ("{admin_token_file: '{fifo}'}", {}, "not a regular file"),
        ("{admin_token_file: '{huge}'}", {}, "larger than 4,096 bytes"),
    ],
)
def test_an_admin_token_source_that_yields_nothing_is_an_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, http: str, env: dict[str, str], message: str
) -> None:
    # Configured but empty used to switch the admin API off without a word.
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("HEALER_TEST_NO_SUCH_TOKEN", raising=False)
    empty = tmp_path / "empty-token"
    empty.write_text("\n", encoding="utf-8")
    (tmp_path / "two").write_text("tok\nsecond\n", encoding="utf-8")
    (tmp_path / "huge").write_text("x" * 10_000, encoding="utf-8")
    os.mkfifo(tmp_path / "fifo")
    for name, target in {
        "{empty}": empty,
        "{missing}": tmp_path / "nope",
        "{two_lines}": tmp_path / "two",
        "{fifo}": tmp_path / "fifo",
        "{huge}": tmp_path / "huge",
    }.items():
        http = http.replace(name, str(target))
    config = load_config(write(tmp_path, f"http: {http}\n"))

    with pytest.raises(ValueError, match=message):
        config.http.resolved_admin_token()


def test_no_admin_token_source_at_all_leaves_the_admin_api_off(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "poll_interval: 10s\n")).http.resolved_admin_token() is None


def test_a_bad_value_from_the_environment_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEALER_POLL_INTERVAL", "fast")
    path = write(tmp_path, "poll_interval: 10s\n")

    with pytest.raises(ConfigError) as info:
        load_config(path)

    assert "poll_interval: " in str(info.value)
    assert "(from the environment: HEALER_POLL_INTERVAL)" in str(info.value)


def test_a_yaml_syntax_error_in_the_configuration_says_file_line_and_column(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "poll_interval: 10s\nguard: {max_in_flight: 2\n")

    with pytest.raises(ConfigError) as info:
        load_config(path)

    assert str(info.value).startswith(f"{path}:3:1: not valid YAML: ")
    assert "http" not in str(info.value)


def test_an_apps_file_line_with_two_words_is_an_error_naming_the_line(tmp_path: Path) -> None:
    apps = tmp_path / "apps.txt"
    apps.write_text("app-1\napp 0003 with spaces\n", encoding="utf-8")
    config = load_config(write(tmp_path, f"enrollment: {{apps_file: '{apps}'}}\n"))

    with pytest.raises(OSError, match=r"apps\.txt:2: 'app 0003 with spaces' is not one app id"):
        config.enrollment.read()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1: x\n", "key 1 must be text"),
        ("? [a]\n: x\n", "must be text"),
        ("poll_interval: " + "[" * 3000 + "]" * 3000 + "\n", "nested too deeply"),
        ("log: {level: verbose}\n", "log.level: Value error, unknown log level 'verbose'"),
    ],
)
def test_a_configuration_that_once_crashed_is_a_clear_error(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))

    assert message in str(info.value)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('"app-0001"', "holds '\"'"),
        ("app#0001", "holds '#'"),
        ("app\u200b0001", "holds '\\u200b'"),
        ("app\x070001", "holds '\\x07'"),
    ],
)
def test_an_apps_file_line_that_cannot_be_an_app_id_is_an_error_naming_the_line(
    tmp_path: Path, line: str, problem: str
) -> None:
    apps = tmp_path / "apps.txt"
    apps.write_text(f"app-1  # fine\n#whole-line comment\n{line}\n", encoding="utf-8")
    config = load_config(write(tmp_path, f"enrollment: {{apps_file: '{apps}'}}\n"))

    with pytest.raises(OSError) as info:
        config.enrollment.read()

    assert str(info.value).startswith(f"{apps}:3: ")
    assert problem in str(info.value)


def test_an_inline_app_id_that_cannot_be_one_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"enrollment\.apps: .*item 1: 'web 2'"):
        load_config(write(tmp_path, "enrollment: {apps: [web-1, 'web 2']}\n"))


def test_a_configuration_path_naming_a_fifo_is_an_error_not_a_wait(tmp_path: Path) -> None:
    fifo = tmp_path / "healer.yaml"
    os.mkfifo(fifo)

    with pytest.raises(ConfigError, match="not a regular file"):
        load_config(fifo)
