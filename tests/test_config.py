"""krait.config: reading an app's settings from its folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from krait.config import AppConfig, load_app, parse_env, parse_memory
from krait.config.settings import Service, named_addresses
from krait.errors import ConfigError


def write_pyproject(root: Path, krait: str, project: str = "") -> Path:
    text = (f"[project]\n{project}\n" if project else "") + "[tool.krait]\n" + krait
    (root / "pyproject.toml").write_text(text)
    return root


def write_krait_toml(root: Path, text: str) -> Path:
    (root / "krait.toml").write_text(text)
    return root


# -- where the settings come from --------------------------------------------------------


def test_pyproject_tool_krait(tmp_path: Path) -> None:
    write_pyproject(tmp_path, 'entry = "service.main:run"\nvcpus = 2\n',
                    project='name = "my-service"')
    app = load_app(tmp_path)
    assert app.entry == "service.main:run"
    assert app.module == "service.main"
    assert app.callable == "run"
    assert app.name == "my-service"
    assert app.vcpus == 2
    assert app.root == tmp_path.resolve()


def test_krait_toml_top_level_keys(tmp_path: Path) -> None:
    write_krait_toml(tmp_path, 'entry = "app:app"\nkind = "asgi"\nname = "web"\n')
    app = load_app(tmp_path)
    assert (app.entry, app.kind, app.name) == ("app:app", "asgi", "web")


def test_two_configurations_are_an_error_not_a_silent_choice(tmp_path: Path) -> None:
    write_pyproject(tmp_path, 'entry = "from_pyproject:main"\n')
    write_krait_toml(tmp_path, 'entry = "from_krait_toml:main"\n')
    with pytest.raises(ConfigError, match=r"both krait\.toml and pyproject"):
        load_app(tmp_path)


def test_krait_toml_takes_the_project_table_from_pyproject(tmp_path: Path) -> None:
    # It used to drop pyproject.toml's dependencies without a word.
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "shop"\ndependencies = ["flask>=3"]\nrequires-python = ">=3.11"\n')
    write_krait_toml(tmp_path, 'entry = "app:main"\n')
    app = load_app(tmp_path)
    assert (app.name, app.dependencies, app.requires_python) == ("shop", ("flask>=3",), ">=3.11")
    write_krait_toml(tmp_path, '[tool.krait]\nentry = "app:main"\n[project]\nname = "own"\n')
    assert load_app(tmp_path).name == "own"


def test_relative_root_is_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_krait_toml(tmp_path, 'entry = "app:main"\n')
    monkeypatch.chdir(tmp_path)
    app = load_app(Path("."))
    assert app.root == tmp_path.resolve()
    assert app.root.is_absolute()


# -- defaults -------------------------------------------------------------------------------


def test_name_defaults_to_project_name(tmp_path: Path) -> None:
    write_pyproject(tmp_path, 'entry = "app:main"\n', project='name = "from-project"')
    assert load_app(tmp_path).name == "from-project"


def test_name_defaults_to_folder_name(tmp_path: Path) -> None:
    root = tmp_path / "shiny-folder"
    root.mkdir()
    write_krait_toml(root, 'entry = "app:main"\n')
    assert load_app(root).name == "shiny-folder"


def test_name_defaults_to_folder_name_without_project_name(tmp_path: Path) -> None:
    root = tmp_path / "other-folder"
    root.mkdir()
    write_pyproject(root, 'entry = "app:main"\n', project='version = "1.0"')
    assert load_app(root).name == "other-folder"


def test_explicit_name_wins_over_project_name(tmp_path: Path) -> None:
    write_pyproject(tmp_path, 'entry = "app:main"\nname = "explicit"\n',
                    project='name = "from-project"')
    assert load_app(tmp_path).name == "explicit"


@pytest.mark.parametrize(("kind", "ports"), [("asgi", (8080,)), ("wsgi", (8080,)),
                                             ("main", ())])
def test_default_ports_depend_on_kind(tmp_path: Path, kind: str, ports: tuple[int, ...]) -> None:
    write_krait_toml(tmp_path, f'entry = "app:app"\nkind = "{kind}"\n')
    assert load_app(tmp_path).ports == ports


def test_kind_defaults_to_main(tmp_path: Path) -> None:
    write_krait_toml(tmp_path, 'entry = "app:main"\n')
    app = load_app(tmp_path)
    assert app.kind == "main"
    assert app.ports == ()
    assert app.memory is None  # what the image needs, measured at build time
    assert app.vcpus == 1
    assert app.env == {}
    assert app.sources is False


def test_explicit_ports_are_kept(tmp_path: Path) -> None:
    write_krait_toml(tmp_path, 'entry = "app:app"\nkind = "asgi"\nports = [80, 443]\n')
    assert load_app(tmp_path).ports == (80, 443)


def test_explicit_empty_ports_are_kept_for_asgi(tmp_path: Path) -> None:
    write_krait_toml(tmp_path, 'entry = "app:app"\nkind = "asgi"\nports = []\n')
    assert load_app(tmp_path).ports == ()


# -- errors -----------------------------------------------------------------------------------


def test_unknown_key_suggests_the_close_one(tmp_path: Path) -> None:
    write_krait_toml(tmp_path, 'entry = "app:main"\nmemroy = "32M"\n')
    with pytest.raises(ConfigError) as info:
        load_app(tmp_path)
    assert "memroy" in info.value.message
    assert info.value.hint is not None
    assert "did you mean `memory`" in info.value.hint


def test_unknown_key_without_close_match_lists_known(tmp_path: Path) -> None:
    write_pyproject(tmp_path, 'entry = "app:main"\nzzzzqqq = 1\n')
    with pytest.raises(ConfigError) as info:
        load_app(tmp_path)
    assert info.value.hint is not None
    assert "did you mean" not in info.value.hint
    assert "entry" in info.value.hint


def test_missing_entry(tmp_path: Path) -> None:
    write_krait_toml(tmp_path, 'kind = "main"\n')
    with pytest.raises(ConfigError) as info:
        load_app(tmp_path)
    assert "`entry` is missing" in info.value.message
    assert info.value.hint is not None
    assert "entry" in info.value.hint


@pytest.mark.parametrize("entry", ["app", "app:", ":main", "app:main:x", "1app:main",
                                   "app:ma-in", ""])
def test_bad_entry_syntax(tmp_path: Path, entry: str) -> None:
    write_krait_toml(tmp_path, f'entry = "{entry}"\n')
    with pytest.raises(ConfigError) as info:
        load_app(tmp_path)
    assert "entry" in info.value.message


def test_bad_kind(tmp_path: Path) -> None:
    write_krait_toml(tmp_path, 'entry = "app:app"\nkind = "cgi"\n')
    with pytest.raises(ConfigError) as info:
        load_app(tmp_path)
    assert "kind" in info.value.message
    assert "cgi" in info.value.message


def test_no_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_app(tmp_path)
    assert str(tmp_path.resolve()) in info.value.message
    assert info.value.hint is not None
    assert "[tool.krait]" in info.value.hint
    assert "krait.toml" in info.value.hint


def test_pyproject_without_tool_krait(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    with pytest.raises(ConfigError) as info:
        load_app(tmp_path)
    assert info.value.hint is not None


def test_invalid_toml(tmp_path: Path) -> None:
    write_krait_toml(tmp_path, 'entry = "app:main\n')
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_app(tmp_path)


def test_root_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_app(tmp_path / "missing")


# -- memory -------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "mib"), [
    ("32M", 32), ("32m", 32), ("1G", 1024), ("2g", 2048), (64, 64), ("64", 64),
    ("512MiB", 512), ("16M", 16), ("64G", 65536), (" 128 M ", 128),
])
def test_parse_memory(value: object, mib: int) -> None:
    assert parse_memory(value) == mib


@pytest.mark.parametrize("value", ["lots", "", "1.5G", "-64M", "64K", "8M", "15", "65G",
                                   "100000", "64MB extra", None])
def test_parse_memory_rejects(value: object) -> None:
    with pytest.raises(ValueError):
        parse_memory(value)


def test_memory_in_file(tmp_path: Path) -> None:
    write_krait_toml(tmp_path, 'entry = "app:main"\nmemory = "1G"\n')
    assert load_app(tmp_path).memory == 1024


def test_bad_memory_in_file(tmp_path: Path) -> None:
    write_krait_toml(tmp_path, 'entry = "app:main"\nmemory = "huge"\n')
    with pytest.raises(ConfigError) as info:
        load_app(tmp_path)
    assert "memory" in info.value.message
    assert "huge" in info.value.message
    assert info.value.hint is not None
    assert info.value.hint.startswith("memory:")


# -- env ------------------------------------------------------------------------------------


def test_parse_env_table() -> None:
    assert parse_env({"A": "1", "B_2": 2, "_x": "y"}) == {"A": "1", "B_2": "2", "_x": "y"}


def test_parse_env_list() -> None:
    assert parse_env(["A=1", "B=x=y", "EMPTY="]) == {"A": "1", "B": "x=y", "EMPTY": ""}


def test_parse_env_single_string() -> None:
    assert parse_env("DEBUG=1") == {"DEBUG": "1"}


@pytest.mark.parametrize("value", [["NOEQUALS"], ["1A=x"], ["A-B=x"], {"bad key": "x"},
                                   ["=x"]])
def test_parse_env_rejects(value: object) -> None:
    with pytest.raises(ValueError):
        parse_env(value)


def test_env_table_in_file(tmp_path: Path) -> None:
    write_pyproject(tmp_path, 'entry = "app:main"\n[tool.krait.env]\nLEVEL = "debug"\nN = 3\n')
    assert load_app(tmp_path).env == {"LEVEL": "debug", "N": "3"}


def test_env_list_in_file(tmp_path: Path) -> None:
    write_krait_toml(tmp_path, 'entry = "app:main"\nenv = ["LEVEL=debug", "URL=a=b"]\n')
    assert load_app(tmp_path).env == {"LEVEL": "debug", "URL": "a=b"}


def test_bad_env_in_file(tmp_path: Path) -> None:
    write_krait_toml(tmp_path, 'entry = "app:main"\nenv = ["LEVEL"]\n')
    with pytest.raises(ConfigError, match="env"):
        load_app(tmp_path)


# -- overrides ---------------------------------------------------------------------------


def test_overrides_win_over_file(tmp_path: Path) -> None:
    write_krait_toml(tmp_path, 'entry = "app:main"\nmemory = "32M"\nvcpus = 1\n'
                               'env = { A = "file" }\n')
    app = load_app(tmp_path, {"memory": "1G", "vcpus": "4", "env": ["A=flag"],
                              "entry": "other:run"})
    assert app.memory == 1024
    assert app.vcpus == 4
    assert app.env == {"A": "flag"}
    assert app.entry == "other:run"


def test_none_overrides_are_ignored(tmp_path: Path) -> None:
    write_krait_toml(tmp_path, 'entry = "app:main"\nmemory = "32M"\n')
    app = load_app(tmp_path, {"memory": None, "name": None})
    assert app.memory == 32
    assert app.name == tmp_path.name


def test_override_kind_changes_default_ports(tmp_path: Path) -> None:
    write_krait_toml(tmp_path, 'entry = "app:app"\n')
    assert load_app(tmp_path, {"kind": "wsgi"}).ports == (8080,)


def test_override_supplies_missing_entry(tmp_path: Path) -> None:
    write_krait_toml(tmp_path, 'kind = "main"\n')
    assert load_app(tmp_path, {"entry": "app:main"}).entry == "app:main"


def test_bad_override_is_a_config_error(tmp_path: Path) -> None:
    write_krait_toml(tmp_path, 'entry = "app:main"\n')
    with pytest.raises(ConfigError) as info:
        load_app(tmp_path, {"vcpus": "99"})
    assert "command line" in info.value.message


# -- JSON round trip -------------------------------------------------------------------------


def test_json_round_trip(tmp_path: Path) -> None:
    write_pyproject(
        tmp_path,
        'entry = "app:app"\nkind = "asgi"\nports = [8080, 9090]\ninclude = ["static"]\n'
        'modules = ["uvloop"]\nexclude = ["ssl"]\nmemory = "128M"\nvcpus = 2\n'
        'sources = true\ncmdline = "quiet"\npython = ".venv/bin/python"\n'
        'connect = ["db=127.0.0.1:5432"]\n'
        '[tool.krait.env]\nGREETING = "héllo, wörld"\n',
        project='name = "round-trip"',
    )
    app = load_app(tmp_path)
    text = app.to_json()
    back = AppConfig.from_json(text)
    assert back == app
    assert isinstance(back.root, Path)
    assert isinstance(back.ports, tuple)
    assert back.to_json() == text


def test_json_round_trip_minimal() -> None:
    app = AppConfig(root=Path("/srv/app"), name="x", entry="app:main")
    assert AppConfig.from_json(app.to_json()) == app


@pytest.mark.parametrize("bad", ["../outside", "a/b", ".hidden", "", "x" * 64])
def test_an_image_name_that_is_not_a_plain_file_name_is_refused(tmp_path: Path,
                                                                bad: str) -> None:
    write_krait_toml(tmp_path, f'entry = "app:main"\nname = "{bad}"\n')
    with pytest.raises(ConfigError, match="name"):
        load_app(tmp_path)
    write_pyproject(tmp_path, 'entry = "app:main"\n', project=f'name = "{bad}"')
    (tmp_path / "krait.toml").unlink()
    with pytest.raises(ConfigError, match="name"):
        load_app(tmp_path)


def test_upper_case_names_are_kept_and_a_folder_name_is_made_plain(tmp_path: Path) -> None:
    write_krait_toml(tmp_path, 'entry = "app:main"\nname = "My_App"\n')
    assert load_app(tmp_path).name == "My_App"
    root = tmp_path / "my app (copy)"
    root.mkdir()
    write_krait_toml(root, 'entry = "app:main"\n')
    assert load_app(root).name == "my-app-copy"


# -- connect: the services outside the VM an app may reach -------------------------------
def test_connect_declares_services_by_name(tmp_path: Path) -> None:
    write_krait_toml(tmp_path, 'entry = "app:app"\nkind = "asgi"\n'
                     'connect = ["DB=127.0.0.1:5432", "cache=[::1]:6379"]\n')
    app = load_app(tmp_path)
    assert app.connect == ("db=127.0.0.1:5432", "cache=[::1]:6379")
    db, cache = map(Service.parse, app.connect)
    assert (db.name, db.host, db.port, db.guest_port, db.env_var) == (
        "db", "127.0.0.1", 5432, 5432, "KRAIT_CONNECT_DB")
    assert (cache.host, cache.port) == ("::1", 6379)


@pytest.mark.parametrize("text, name, host, port, guest", [
    ("https://API.example.com", "api.example.com", "API.example.com", 443, "api.example.com:443"),
    ("http://api.example.com:8000/", "api.example.com", "api.example.com", 8000,
     "api.example.com:8000"),
    ("db.prod:5432", "db.prod", "db.prod", 5432, "db.prod:5432"),
    ("cache=redis.prod:6379", "cache", "redis.prod", 6379, "redis.prod:6379"),
    ("db=localhost:5432", "db", "localhost", 5432, "127.0.0.1:5432"),
    ("api.example.test=127.0.0.1:8443", "api.example.test", "127.0.0.1", 8443,
     "api.example.test:8443"),
])
def test_connect_by_host_name_keeps_the_name_inside_the_guest(
        text: str, name: str, host: str, port: int, guest: str) -> None:
    service = Service.parse(text)
    assert (service.name, service.host, service.port, service.guest_address) == (
        name, host, port, guest)
    assert Service.parse(str(service)) == service  # what the manifest stores reads back


def test_each_host_name_gets_one_loopback_address_in_name_order() -> None:
    services = [Service.parse(s) for s in ("https://b.example", "b.example:80",
                                           "a.example:5432", "db=127.0.0.1:5432")]
    assert named_addresses(services) == {"a.example": "127.77.0.1", "b.example": "127.77.0.2"}


@pytest.mark.parametrize("value, why", [
    ('["db"]', "expected HOST:PORT"),
    ('["db=127.0.0.1"]', "expected HOST:PORT"),
    ('["10.0.0.5:5432"]', "needs a name"),
    ('["ftp://files.example.com"]', "http:// or https://"),
    ('["https://api.example.com/v1"]', "not a resource"),
    ('["https://user@api.example.com"]', "not a resource"),
    ('["https://10.0.0.5"]', "by name only"),
    ('["db.prod:5432", "db.prod:5432"]', "given twice"),
    ('["db=127.0.0.1:0"]', "from 1 to 65535"),
    ('["1db=127.0.0.1:5432"]', "a name is a letter"),
    ('["db=bad host:5432"]', "not a host name"),
    ('["db=a:1", "db=b:2"]', "name db given twice"),
    ('["a=127.0.0.1:5432", "b=10.0.0.1:5432"]', "place in the guest 127.0.0.1:5432 given twice"),
    ('["a=h.prod:443", "https://h.prod"]', "place in the guest h.prod:443 given twice"),
    ('["web=127.0.0.1:8080"]', "the app itself listens on port 8080"),
])
def test_bad_connect_is_refused(tmp_path: Path, value: str, why: str) -> None:
    write_krait_toml(tmp_path, f'entry = "app:app"\nkind = "asgi"\nconnect = {value}\n')
    with pytest.raises(ConfigError, match=why):
        load_app(tmp_path)


# -- what a value may be -------------------------------------------------------------------

@pytest.mark.parametrize(("text", "words"), [
    ('ports = [8080, 8080]', "port 8080 is given twice"),
    ('env = { A = { nested = 1 } }', "expected a string (or a number)"),
    ('env = { A = [1, 2] }', "expected a string (or a number)"),
    ('env = { A = true }', "expected a string (or a number)"),
    ('max-body = "2G"', "expected at most 1G"),
    (f'entry = "{"m" * 300}:app"', "expected at most 200 characters"),
    (f'name = "{"x" * 500_000}"', "(500002 characters)"),
])
def test_values_krait_would_mishandle_are_refused(tmp_path: Path, text: str, words: str) -> None:
    write_krait_toml(tmp_path, 'entry = "app:main"\n' * ("entry" not in text) + text + "\n")
    with pytest.raises(ConfigError) as e:
        load_app(tmp_path)
    assert words in e.value.message
    assert len(e.value.message) < 500  # a bad value is quoted, not echoed whole


def test_numbers_in_env_read_as_text(tmp_path: Path) -> None:
    write_krait_toml(tmp_path, 'entry = "app:main"\nenv = { PORT = 8080, RATIO = 0.5 }\n')
    assert load_app(tmp_path).env == {"PORT": "8080", "RATIO": "0.5"}


def test_a_configuration_file_of_megabytes_is_refused_unread(tmp_path: Path) -> None:
    write_krait_toml(tmp_path, 'entry = "app:main"\n' + "# padding\n" * 200_000)
    with pytest.raises(ConfigError, match="too large for a configuration"):
        load_app(tmp_path)


def test_protocol_defaults_by_kind_and_is_checked(tmp_path: Path) -> None:
    from krait.config.settings import serve_protocol

    assert serve_protocol("asgi", None) == "http" and serve_protocol("wsgi", None) == "http"
    assert serve_protocol("main", None) == "tcp"
    assert serve_protocol("asgi", "tcp") == "tcp"
    (tmp_path / "krait.toml").write_text('entry = "app:app"\nkind = "asgi"\nprotocol = "tcp"\n')
    assert load_app(tmp_path).protocol == "tcp"
    (tmp_path / "krait.toml").write_text('entry = "app:app"\nkind = "asgi"\nprotocol = "h2"\n')
    with pytest.raises(ConfigError, match="expected one of http, tcp"):
        load_app(tmp_path)
