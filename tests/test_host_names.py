"""A name given to krait (an instance's, a serve's) is never a path: `rm`, `logs`, `stop`
and `replace` refuse one that could reach outside the state folder, and touch nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ._hostile import krait, refused, tree


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the state folder that looks like an instance's, its console log a
    link to a secret."""
    folder = tmp_path / "V"
    folder.mkdir()
    (folder / "instance.json").write_text(json.dumps({
        "name": "V", "image": "/x.krait", "image_name": "x", "image_digest": "0" * 64,
        "memory": 48, "vcpus": 1, "accel": "tcg", "ports": [], "created": 0.0}))
    (tmp_path / "secret").write_text("s3cret")
    (folder / "console.log").symlink_to(tmp_path / "secret")
    return folder


@pytest.mark.parametrize("args", [
    ("rm", "../../V"), ("rm", "-f", "../../V"), ("rm", "ABS"), ("logs", "../../V"),
    ("logs", "ABS"), ("stop", "../../V"), ("rm", ".."), ("stop", "..\\x1b[2J")])
def test_instance_commands_refuse_a_name_that_is_a_path(
        outside: Path, tmp_path: Path, args: tuple[str, ...]) -> None:
    before = tree(outside)
    args = tuple(str(outside) if a == "ABS" else a for a in args)
    ran = krait(*args, env={"KRAIT_STATE": str(tmp_path / "state")})
    refused(ran, "is not a valid instance name")
    assert "s3cret" not in ran.stdout + ran.stderr
    assert tree(outside) == before  # not removed, no run.json written, nothing read


def test_serve_names_are_checked_too(tmp_path: Path) -> None:
    image = tmp_path / "new.krait"
    image.write_bytes(b"")
    ran = krait("replace", "../../serve/x", image, env={"KRAIT_STATE": str(tmp_path / "s")})
    refused(ran, "is not a valid serve name")
    ran = krait("serve", image, "--port", "1", "--name", "../x",
                env={"KRAIT_STATE": str(tmp_path / "s")})
    refused(ran, "is not a valid serve name")
