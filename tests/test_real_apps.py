"""Fast tests for what real apps need: servers, venv libraries, dynamic imports, TLS."""

from __future__ import annotations

import importlib.util
import io
import shutil
import subprocess
import sys
import textwrap
from contextlib import redirect_stderr
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pytest

from krait.config import load_app
from krait.errors import BuildError, ConfigError, TraceError
from krait.guest import missing
from krait.image import elf
from krait.image.closure import _library_files
from krait.image.elf import elf_closure
from krait.image.tls import GUEST_CERT, build_self_signed, tls_env, tls_files, with_self_signed
from krait.image.trace import Trace, runtime_modules, trace_app

ROOT = Path(__file__).resolve().parents[1]


def app_dir(tmp_path: Path, toml: str, code: str = "def main():\n    pass\n") -> Path:
    (tmp_path / "krait.toml").write_text(textwrap.dedent(toml))
    (tmp_path / "app.py").write_text(textwrap.dedent(code))
    return tmp_path


# -- the server setting --------------------------------------------------------------------

def test_server_defaults_to_builtin(tmp_path: Path) -> None:
    app = load_app(app_dir(tmp_path, 'entry = "app:app"\nkind = "asgi"\n'))
    assert app.server == "builtin"
    assert "krait.guest.http" in runtime_modules(app)


def test_uvicorn_serves_asgi_and_is_traced(tmp_path: Path) -> None:
    app = load_app(app_dir(tmp_path, 'entry = "app:app"\nkind = "asgi"\nserver = "uvicorn"\n'))
    mods = runtime_modules(app)
    assert "uvicorn" in mods and "krait.guest.servers" in mods
    assert "krait.guest.http" not in mods


@pytest.mark.parametrize(("kind", "server"), [("wsgi", "uvicorn"), ("asgi", "waitress"),
                                              ("main", "uvicorn")])
def test_server_must_fit_the_kind(tmp_path: Path, kind: str, server: str) -> None:
    with pytest.raises(ConfigError, match=f"server = '{server}' cannot serve kind = '{kind}'"):
        load_app(app_dir(tmp_path, f'entry = "app:app"\nkind = "{kind}"\nserver = "{server}"\n'))


def test_unknown_server(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected one of builtin, uvicorn, waitress"):
        load_app(app_dir(tmp_path, 'entry = "app:app"\nkind = "asgi"\nserver = "gunicorn"\n'))


def test_missing_server_package_is_a_build_error(tmp_path: Path) -> None:
    # krait's own interpreter has no waitress: the build says so, naming it.
    if importlib.util.find_spec("waitress"):
        pytest.skip("waitress is installed here")
    folder = app_dir(tmp_path, 'entry = "app:app"\nkind = "wsgi"\nserver = "waitress"\n',
                     "def app(environ, start_response):\n    return []\n")
    with pytest.raises(TraceError) as e:
        trace_app(load_app(folder), Path(sys.executable))
    assert "`waitress`" in e.value.message and "install" in (e.value.hint or "")


# -- dynamic imports -----------------------------------------------------------------------

def test_literal_dynamic_import_is_traced(tmp_path: Path) -> None:
    folder = app_dir(tmp_path, 'entry = "app:main"\n', """
        import importlib

        def main():
            return importlib.import_module("email.mime.text")
    """)
    trace = trace_app(load_app(folder), Path(sys.executable))
    assert "email.mime.text" in trace.modules


def test_unimportable_dynamic_import_names_file_line_and_module(tmp_path: Path) -> None:
    folder = app_dir(tmp_path, 'entry = "app:main"\n', """
        import importlib

        def main():
            return importlib.import_module("plugin_that_is_not_there")
    """)
    with pytest.raises(TraceError) as e:
        trace_app(load_app(folder), Path(sys.executable))
    assert "app.py:5 imports `plugin_that_is_not_there` dynamically" in e.value.message
    assert "modules" in (e.value.hint or "")


def test_package_wildcard_imports_every_submodule(tmp_path: Path) -> None:
    folder = app_dir(tmp_path, 'entry = "app:main"\nmodules = ["json.*"]\n')
    trace = trace_app(load_app(folder), Path(sys.executable))
    assert {"json.decoder", "json.encoder", "json.scanner", "json.tool"} <= set(trace.modules)


def test_failed_optional_imports_are_recorded_as_absent(tmp_path: Path) -> None:
    folder = app_dir(tmp_path, 'entry = "app:main"\n', """
        try:
            import email.not_a_submodule_xyz
        except ImportError:
            pass

        def main():
            pass
    """)
    trace = trace_app(load_app(folder), Path(sys.executable))
    assert "email.not_a_submodule_xyz" in trace.absent
    assert "email" not in trace.absent


def test_guest_hint_only_for_a_missing_module_the_app_did_not_handle(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(missing, "_told", set())
    monkeypatch.setattr(missing, "_missed", set())
    monkeypatch.setattr(missing, "_absent", frozenset({"json.optional_thing"}))
    for name in ("json.lazy_thing", "json.optional_thing", "not_stdlib.sub", "smtplib"):
        missing.MissingModuleHint.find_spec(name)
    assert missing.missed() == {"json.lazy_thing", "smtplib"}  # optional, third party: no
    err = io.StringIO()
    with redirect_stderr(err):
        try:  # handled by the app: nothing printed
            raise ModuleNotFoundError("no", name="smtplib")
        except ImportError:
            pass
        for _ in range(2):  # ended a request: named, once
            try:
                try:
                    raise ModuleNotFoundError("no", name="json.lazy_thing")
                except ImportError as e:
                    raise RuntimeError("the view failed") from e
            except RuntimeError:
                missing.print_unhandled()
        try:
            raise ModuleNotFoundError("no", name="not_stdlib.sub")
        except ImportError:
            missing.print_unhandled()
    hints = [line for line in err.getvalue().splitlines() if line.startswith("krait:")]
    assert len(hints) == 1
    assert 'modules = ["json.lazy_thing"]' in hints[0] and '"json.*"' in hints[0]


# -- shared libraries from the app's venv --------------------------------------------------

def _trace(tmp_path: Path, site: Path, stdlib: Path) -> Trace:
    return Trace(executable=Path(sys.executable), version=(3, 11, 0), magic="x", stdlib=stdlib,
                 dynload=stdlib / "lib-dynload", path=(tmp_path, site, stdlib),
                 modules={}, shared_objects=(), distributions={}, packages={},
                 startup=frozenset(), runtime=tmp_path / "runtime")


def test_bundled_libraries_move_with_their_package(tmp_path: Path) -> None:
    site = tmp_path / ".venv" / "lib" / "python3.11" / "site-packages"
    stdlib = tmp_path / "stdlib"
    trace = _trace(tmp_path, site, stdlib)
    entries = sorted(trace.path)
    lib = site / "numpy" / "_core" / ".." / ".." / "numpy.libs" / "libopenblas.so"
    [f] = _library_files(lib, trace, tmp_path, [tmp_path], entries)
    assert (f.layer, f.guest) == ("packages", "/krait/packages/numpy.libs/libopenblas.so")
    assert f.how == "elf"
    ext = stdlib / "lib-dynload" / "_ssl.so"
    [g] = _library_files(ext, trace, tmp_path, [tmp_path], entries)
    assert (g.layer, g.guest) == ("base", str(ext))


needs_cc = pytest.mark.skipif(not shutil.which("cc"), reason="needs a C compiler")


def _shared(folder: Path, name: str, *libs: str) -> Path:
    src = folder / f"{name}.c"
    calls = "".join(f"extern int {lib}_f(void);\n" for lib in libs)
    body = " + ".join([f"{lib}_f()" for lib in libs] or ["1"])  # used, so really linked
    src.write_text(f"{calls}int {name}_f(void) {{ return {body}; }}\n")
    out = folder / f"lib{name}.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", out, src, f"-L{folder}",
                    *(f"-l{lib}" for lib in libs)], check=True, capture_output=True)
    return out


@needs_cc
def test_missing_shared_library_is_a_build_error_naming_it(tmp_path: Path) -> None:
    _shared(tmp_path, "kraitgone")
    needs = _shared(tmp_path, "kraitneeds", "kraitgone")
    (tmp_path / "libkraitgone.so").unlink()
    other = tmp_path / "elsewhere"
    other.mkdir()
    moved = other / needs.name
    needs.rename(moved)
    with pytest.raises(BuildError) as e:
        elf_closure([moved])
    assert "libkraitgone.so" in e.value.message and "install" in (e.value.hint or "")


@needs_cc
def test_sibling_libraries_of_a_wheel_find_each_other(tmp_path: Path) -> None:
    # psycopg_binary.libs/libselinux needs libpcre from the same folder, without an RPATH.
    libs = tmp_path / "pkg.libs"
    libs.mkdir()
    base = _shared(libs, "kraitbase")
    top = _shared(libs, "kraittop", "kraitbase")
    assert base in elf._needed(top)


# -- TLS -----------------------------------------------------------------------------------

needs_openssl = pytest.mark.skipif(not shutil.which("openssl"), reason="needs openssl")


@needs_openssl
def test_self_signed_pair_is_baked_into_the_app_layer(tmp_path: Path) -> None:
    folder = app_dir(tmp_path, 'entry = "app:main"\n')
    app = with_self_signed(load_app(folder))
    assert app.tls_cert == ".krait-tls/cert.pem"
    cert = (folder / app.tls_cert).read_text()
    assert cert.startswith("-----BEGIN CERTIFICATE-----")
    files = tls_files(app)
    assert [(f.layer, f.guest) for f in files] == [("app", GUEST_CERT),
                                                   ("app", "/krait/app/.krait/tls/key.pem")]
    assert tls_env(app)["KRAIT_TLS_CERT"] == GUEST_CERT
    again = with_self_signed(load_app(folder))  # kept: rebuilds reuse the pair
    assert again.tls_cert is not None
    assert (folder / again.tls_cert).read_text() == cert


def test_named_certificate_must_exist(tmp_path: Path) -> None:
    folder = app_dir(tmp_path, 'entry = "app:main"\ntls-cert = "c.pem"\ntls-key = "k.pem"\n')
    with pytest.raises(BuildError, match="cannot be read") as e:
        tls_files(replace(load_app(folder), bake_tls_key=True))
    assert "--self-signed" in (e.value.hint or "")


def test_cert_without_key_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="go together"):
        load_app(app_dir(tmp_path, 'entry = "app:main"\ntls-cert = "c.pem"\n'))


@needs_openssl
def test_build_self_signed_for_a_name(tmp_path: Path) -> None:
    build_self_signed(tmp_path / "c.pem", tmp_path / "k.pem", "example.test")
    out = subprocess.run(["openssl", "x509", "-in", tmp_path / "c.pem", "-noout", "-text"],
                         capture_output=True, text=True, check=True).stdout
    assert "CN = example.test" in out and "IP Address:127.0.0.1" in out
    assert (tmp_path / "k.pem").stat().st_mode & 0o077 == 0


# -- the website example's path handling (no VM) ------------------------------------------

def _website() -> ModuleType:
    spec = importlib.util.spec_from_file_location("krait_website_example",
                                                  ROOT / "examples" / "website" / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_website_paths_cannot_escape_the_site() -> None:
    site = _website()
    pages = site.load_site()
    assert site.resolve("/", pages) == (200, "/")
    assert site.resolve("/about", pages) == (301, "/about/")
    assert site.resolve("/css/style.css?x=1", pages) == (200, "/css/style.css")
    for evil in ("/../app.py", "/css/../../app.py", "/%2e%2e/app.py", "//etc/passwd",
                 "/..%2f..%2fetc%2fpasswd", "/a/%00", "/..\\app.py"):
        status, _ = site.resolve(evil, pages)
        assert status in (400, 404), evil
    assert pages["/index.html"] is pages["/"]
    assert pages["/favicon.png"].content_type == "image/png"
