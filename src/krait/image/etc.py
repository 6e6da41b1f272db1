"""The few files of /etc that the C library reads for a Python program, in every guest.

There is no login and one user: the app runs as root. Yet ordinary libraries ask who
that is (``getpass.getuser()``, ``pwd.getpwuid(os.getuid())``, ``shutil.chown(path,
"root")``, ``grp`` look-ups, ``os.path.expanduser("~")`` without $HOME), and name
``localhost``. Without these files each of those fails with KeyError or gaierror. The
home folder is /tmp, where PID 1 points $HOME too: the only writable place.
"""

from __future__ import annotations

from pathlib import Path

from krait.config.settings import LOOPBACK, Service, named_addresses
from krait.guest.protocol import HOSTS_PATH
from krait.image.entry import Entry

# root, and nobody/nogroup for code that drops privileges to them. No shell: nologin.
PASSWD = ("root:x:0:0:root:/tmp:/usr/sbin/nologin\n"
          "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
GROUP = "root:x:0:\nnogroup:x:65534:\n"
# Files and only files: there is no directory service and no DNS in the guest. A host
# name resolves if the app declared it (its /etc/hosts, below), and any other fails at
# once as "name not known": nothing is asked of a network the guest does not have.
NSSWITCH = ("passwd: files\ngroup: files\nshadow: files\nhosts: files\n"
            "networks: files\nprotocols: files\nservices: files\n")


# Names of services and protocols (socket.getservbyname("http"), getaddrinfo(host,
# "https"), getprotobyname("tcp")): the build host's tables (Debian's netbase), as the
# interpreter and its libraries come from the build host too.
TABLES = (Path("/etc/services"), Path("/etc/protocols"))


def etc_entries(tables: tuple[Path, ...] = TABLES) -> list[Entry]:
    """/etc/passwd, /etc/group, /etc/hosts and /etc/nsswitch.conf of the base layer,
    which images share (/etc/hosts leads to the app layer's: see :func:`hosts`), and the
    build host's /etc/services and /etc/protocols where it has them."""
    return [Entry.folder("/etc"),
            Entry.file("/etc/passwd", PASSWD.encode()),
            Entry.file("/etc/group", GROUP.encode()),
            Entry.symlink("/etc/hosts", HOSTS_PATH),
            Entry.file("/etc/nsswitch.conf", NSSWITCH.encode()),
            *(Entry.file(f"/etc/{t.name}", t.read_bytes()) for t in tables if t.is_file())]


def hosts(connect: tuple[str, ...]) -> Entry:
    """The app's /etc/hosts: localhost, and each host name it declared in ``connect`` at
    the loopback address where the guest's end of the tunnel listens for it. IPv4 only:
    the guest's kernel has no IPv6 (see kernel/fragments/net.config)."""
    named = named_addresses([Service.parse(s) for s in connect])
    lines = [f"{LOOPBACK}\tlocalhost", *(f"{addr}\t{name}" for name, addr in named.items())]
    return Entry.file(HOSTS_PATH, "\n".join(lines).encode() + b"\n")
