"""The app in an OCI container run by crun, from a Debian slim root with Python.

The root is ``debootstrap --variant=minbase`` plus python3 (cached, see rootfs.py)
with the payload in /opt/app and the app's environment and server in /opt/venv (see
debian.py): what a container user would build. The container gets its
own network namespace wired to the host by slirp4netns, as rootless Podman does: the
same user-mode network library (libslirp) as QEMU's ``-netdev user``, with a host port
forward, so the container and the VMs share a network backend and the host's network
is not touched. Without slirp4netns the container shares the host's network (as
``--network host``). Its memory is limited to the same size the VMs get.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from krait.bench.compare._common import require_tool, tree_mb
from krait.bench.compare.base import Running, Variant
from krait.bench.compare.debian import APP_DIR, build_venv, cores, install, server_argv
from krait.bench.compare.rootfs import build_debian_root
from krait.bench.compare.surface import surface_of_tree, tree_bytes
from krait.errors import VmError
from krait.paths import cache_dir
from krait.run import run, spawn


def oci_config(rootfs: Path, args: list[str], env: dict[str, str], memory_mib: int,
               base: dict[str, Any], host_network: bool = False,
               cwd: str = "/") -> dict[str, Any]:
    """``crun spec``'s default config, adjusted: read-only root, a memory limit, and its
    own network namespace (or the host's)."""
    config: dict[str, Any] = json.loads(json.dumps(base))
    config["root"] = {"path": str(rootfs), "readonly": True}
    process = config["process"]
    process["terminal"] = False
    process["args"] = args
    process["cwd"] = cwd
    process["env"] = [*process.get("env", []), *(f"{k}={v}" for k, v in env.items())]
    linux = config.setdefault("linux", {})
    namespaces = [ns for ns in linux.get("namespaces", []) if ns["type"] != "network"]
    linux["namespaces"] = namespaces if host_network else [*namespaces, {"type": "network"}]
    linux.setdefault("resources", {})["memory"] = {"limit": memory_mib << 20}
    config["hostname"] = "app"
    return config


def cgroup_memory_bytes(pid: int) -> int | None:
    """What the container's memory cgroup is charged (v1 usage_in_bytes or v2 current)."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            f = Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.usage_in_bytes"
        elif controllers == "":
            f = Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.current"
        else:
            continue
        with contextlib.suppress(OSError, ValueError):
            return int(f.read_text())
    return None


def hybrid_cgroups() -> bool:
    """cgroup v1 with a v2 hierarchy that has controllers: crun refuses to run there."""
    unified = Path("/sys/fs/cgroup/unified")
    try:
        return os.path.ismount(unified) and bool((unified / "cgroup.controllers").read_text()
                                                 .split())
    except OSError:
        return False


def crun_argv(crun: str, *args: str | os.PathLike[str], hybrid: bool) -> list[str]:
    """crun's command line; on a hybrid-cgroup host, crun runs in a private mount namespace
    without the v2 hierarchy (so it uses v1 only), which changes nothing on the host."""
    argv = [crun, *(os.fspath(a) for a in args)]
    if not hybrid:
        return argv
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
            'umount /sys/fs/cgroup/unified && exec "$@"', "sh", *argv]


@contextlib.contextmanager
def slirp_forward(slirp: str, pid: int, host_port: int, guest_port: int,
                  workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Wire the network namespace of ``pid`` to the host with slirp4netns and forward
    127.0.0.1:host_port to the container's guest_port; own the slirp4netns process."""
    api = workdir / "slirp.sock"
    with spawn([slirp, "--configure", "--mtu=65520", "--disable-host-loopback",
                "--api-socket", api, str(pid), "tap0"], grace=1,
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        deadline = time.monotonic() + 10
        while not api.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise VmError(f"slirp4netns did not start (status {proc.poll()})")
            time.sleep(0.005)
        request = {"execute": "add_hostfwd", "arguments": {
            "proto": "tcp", "host_addr": "127.0.0.1", "host_port": host_port,
            "guest_port": guest_port}}
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(api))
            sock.sendall(json.dumps(request).encode())
            sock.shutdown(socket.SHUT_WR)
            reply = sock.recv(4096)
        if b'"error"' in reply:
            raise VmError(f"slirp4netns refused the port forward: {reply.decode()}")
        yield proc


class _Container(Running):
    def __init__(self, runtime_pid: int, pid: int, slirp_pid: int | None) -> None:
        self.runtime_pid, self.pid, self.slirp_pid = runtime_pid, pid, slirp_pid

    def host_pss_mb(self) -> float:
        # crun stays as the container's parent (as conmon or a shim would) and slirp4netns
        # is its network stack (QEMU's RSS includes its own): count both.
        return tree_mb(self.runtime_pid, "pss") + (tree_mb(self.slirp_pid, "pss")
                                                   if self.slirp_pid else 0.0)

    def guest_used_mb(self, stats: dict[str, object]) -> float | None:
        charged = cgroup_memory_bytes(self.pid)
        return round(charged / (1 << 20), 1) if charged is not None else None


class ContainerVariant(Variant):
    name = "container"
    label = "container (crun, Debian slim)"

    def prepare(self) -> None:
        self.crun = require_tool("crun", "crun")
        self.hybrid = hybrid_cgroups()
        self.rootfs = build_debian_root("container")
        install(self.rootfs, self.payload, build_venv(self.app))
        self.bundle = cache_dir() / "bench" / "container"
        self.bundle.mkdir(parents=True, exist_ok=True)
        spec = self.bundle / "default-spec.json"
        if not spec.exists():
            tmp = self.bundle / "spec-tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            run([self.crun, "spec"], cwd=tmp)
            (tmp / "config.json").replace(spec)
            tmp.rmdir()
        self.base_spec = json.loads(spec.read_text())
        version = run([self.crun, "--version"]).stdout.splitlines()[0]
        self.slirp = shutil.which("slirp4netns")
        network = "host (no slirp4netns here)"
        if self.slirp:
            network = run([self.slirp, "--version"]).stdout.splitlines()[0] + ", own netns"
        self.details = {"runtime": version, "hybrid_cgroups_workaround": self.hybrid,
                        "root": str(self.rootfs), "network": network,
                        "guest_memory": "the container's memory cgroup charge",
                        "memory_limit_mib": self.settings.memory_mib,
                        "server_argv": server_argv(self.app, self.app.ports[0], cores())}

    def artifact_bytes(self) -> int:
        return tree_bytes(self.rootfs)

    def surface(self) -> dict[str, int | None]:
        return surface_of_tree(self.rootfs)

    @contextlib.contextmanager
    def started(self, port: int) -> Iterator[Running]:
        cid = f"krait-bench-{uuid.uuid4().hex[:8]}"
        guest_port = self.app.ports[0] if self.slirp else port
        config = oci_config(self.rootfs, server_argv(self.app, guest_port, cores()),
                            self.app.env, self.settings.memory_mib, self.base_spec,
                            host_network=not self.slirp, cwd=APP_DIR)
        config["linux"]["cgroupsPath"] = f"/{cid}"  # crun removes it on delete
        bundle = self.bundle / cid
        bundle.mkdir()
        (bundle / "config.json").write_text(json.dumps(config, indent=2))
        try:
            with spawn(self._crun("run", "--bundle", bundle, cid),
                       stdout=subprocess.DEVNULL, stderr=None) as proc:
                try:
                    pid = self._init_pid(cid, proc)
                    with contextlib.ExitStack() as stack:
                        slirp = (stack.enter_context(slirp_forward(
                            self.slirp, pid, port, guest_port, bundle)) if self.slirp else None)
                        yield _Container(proc.pid, pid, slirp.pid if slirp else None)
                finally:
                    run(self._crun("kill", cid, "KILL"), check=False)
        finally:
            run(self._crun("delete", "--force", cid), check=False)
            shutil.rmtree(bundle, ignore_errors=True)

    def _crun(self, *args: str | os.PathLike[str]) -> list[str]:
        return crun_argv(self.crun, *args, hybrid=self.hybrid)

    def _init_pid(self, cid: str, proc: subprocess.Popen[bytes]) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            state = run(self._crun("state", cid), check=False)
            if state.returncode == 0:
                pid = int(json.loads(state.stdout).get("pid") or 0)
                if pid:
                    return pid
            if proc.poll() is not None:
                raise VmError(f"crun exited with status {proc.returncode} before the "
                              "container started")
            time.sleep(0.01)
        raise VmError("the container did not start in 30 s")
