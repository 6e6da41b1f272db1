"""The few files of /etc that the C library reads for a Python program, in every guest.

There is no login and one user: the app runs as root. Yet ordinary libraries ask who
that is (``getpass.getuser()``, ``pwd.getpwuid(os.getuid())``, ``shutil.chown(path,
"root")``, ``grp`` look-ups, ``os.path.expanduser("~")`` without $HOME), and name
``localhost``. Without these files each of those fails with KeyError or gaierror. The
home folder is /tmp, where PID 1 points $HOME too: the only writable place.
"""

from __future__ import annotations

from pathlib import Path

from krait.image.entry import Entry

# root, and nobody/nogroup for code that drops privileges to them. No shell: nologin.
PASSWD = ("root:x:0:0:root:/tmp:/usr/sbin/nologin\n"
          "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
GROUP = "root:x:0:\nnogroup:x:65534:\n"
# IPv4 only: the guest's kernel has no IPv6 (see kernel/fragments/net.config).
HOSTS = "127.0.0.1\tlocalhost\n"
# Files first and only files for users and groups: there is no directory service; names
# of hosts from /etc/hosts, then DNS (what the app declares, if anything answers).
NSSWITCH = ("passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"
            "networks: files\nprotocols: files\nservices: files\n")


# Names of services and protocols (socket.getservbyname("http"), getaddrinfo(host,
# "https"), getprotobyname("tcp")): the build host's tables (Debian's netbase), as the
# interpreter and its libraries come from the build host too.
TABLES = (Path("/etc/services"), Path("/etc/protocols"))


def etc_entries(tables: tuple[Path, ...] = TABLES) -> list[Entry]:
    """/etc/passwd, /etc/group, /etc/hosts and /etc/nsswitch.conf, and the build host's
    /etc/services and /etc/protocols where it has them."""
    return [Entry.folder("/etc"),
            Entry.file("/etc/passwd", PASSWD.encode()),
            Entry.file("/etc/group", GROUP.encode()),
            Entry.file("/etc/hosts", HOSTS.encode()),
            Entry.file("/etc/nsswitch.conf", NSSWITCH.encode()),
            *(Entry.file(f"/etc/{t.name}", t.read_bytes()) for t in tables if t.is_file())]
