"""The few files of /etc that the C library reads for a Python program, in every guest.

There is no login and one user: the app runs as root. Yet ordinary libraries ask who
that is (``getpass.getuser()``, ``pwd.getpwuid(os.getuid())``, ``shutil.chown(path,
"root")``, ``grp`` look-ups, ``os.path.expanduser("~")`` without $HOME), and name
``localhost``. Without these files each of those fails with KeyError or gaierror. The
home folder is /tmp, where PID 1 points $HOME too: the only writable place.
"""

from __future__ import annotations

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


def etc_entries() -> list[Entry]:
    """/etc/passwd, /etc/group, /etc/hosts and /etc/nsswitch.conf."""
    return [Entry.folder("/etc"),
            Entry.file("/etc/passwd", PASSWD.encode()),
            Entry.file("/etc/group", GROUP.encode()),
            Entry.file("/etc/hosts", HOSTS.encode()),
            Entry.file("/etc/nsswitch.conf", NSSWITCH.encode())]
