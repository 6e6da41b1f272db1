"""Turning host files into the bytes the guest gets: bytecode, stripped ELF, copies.

Bytecode uses unchecked-hash invalidation: no timestamps, so it is reproducible, and
the guest never stats a source file that is not there. The app's interpreter compiles,
in a fresh process (so the bytes do not depend on krait's own state). Results are
cached by content, so a rebuild after a one-line change recompiles one file.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

from krait.errors import BuildError
from krait.image.closure import GuestFile
from krait.paths import cache_dir, krait_dir, write_atomically
from krait.run import run

# Prints, as JSON, the sources that do not compile (a Python 2 script in a package, a
# template named .py): they could not be imported on the host either.
_COMPILER = """
import json, py_compile, sys
failed = {}
for src, dst, dfile in json.load(sys.stdin):
    try:
        py_compile.compile(src, cfile=dst, dfile=dfile, doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    except py_compile.PyCompileError as e:
        failed[src] = e.exc_type_name + ": " + str(e.exc_value)
print(json.dumps(failed))
"""


def _cache(kind: str) -> Path:
    return krait_dir(cache_dir(), "objects", kind)


def _content_key(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()


def compile_all(files: list[GuestFile], python: Path, magic: str
                ) -> tuple[dict[str, bytes], dict[str, str]]:
    """Guest path -> .pyc bytes for every ``pyc`` file; and source -> why it does not
    compile, for those that do not."""
    out: dict[str, bytes] = {}
    todo: list[tuple[GuestFile, Path]] = []
    cache = _cache("pyc")
    for f in files:
        if f.how != "pyc":
            continue
        cached = cache / _content_key("fresh-process", magic, f.guest[:-1], f.host.read_bytes())
        if cached.exists():
            out[f.guest] = cached.read_bytes()
        else:
            todo.append((f, cached))
    if not todo:
        return out, {}
    # Always in a fresh interpreter of the app's: marshal marks objects whose reference
    # count is above one, so bytecode compiled inside a long-lived process (krait under
    # pytest, say) can differ byte for byte from the same source compiled elsewhere.
    with tempfile.TemporaryDirectory(prefix="krait-pyc-") as tmp:
        jobs = [(str(f.host), f"{tmp}/{i}.pyc", f.guest[:-1]) for i, (f, _) in enumerate(todo)]
        proc = run([python, "-I", "-c", _COMPILER], input=json.dumps(jobs).encode(),
                   check=False)
        try:
            failed: dict[str, str] = json.loads(proc.stdout)
        except ValueError:
            failed = {}
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or "").strip().splitlines()[-6:])
            raise BuildError(f"cannot compile the app's Python files:\n{tail}")
        for (f, cached), (src, dst, _) in zip(todo, jobs, strict=True):
            if src in failed:
                continue
            data = Path(dst).read_bytes()
            out[f.guest] = data
            write_atomically(cached, data)
    return out, failed


def stripped(path: Path) -> bytes:
    """An ELF file without debug sections (cached by path, size and mtime)."""
    st = path.stat()
    cached = _cache("elf") / _content_key(str(path), str(st.st_size), str(st.st_mtime_ns))
    if cached.exists():
        return cached.read_bytes()
    with tempfile.TemporaryDirectory(prefix="krait-strip-") as tmp:
        out = Path(tmp) / path.name
        run(["objcopy", "--strip-debug", "--remove-section=.comment", path, out])
        data = out.read_bytes()
    write_atomically(cached, data, mode=0o755)
    return data
