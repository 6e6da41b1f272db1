"""What the app can no longer do, fixed before it is imported and for good.

PID 1 is confined before it forks the app (see krait.guest.reaper), and both keep three
privileges for krait's own work after the app is up: resetting the machine at the end
(CAP_SYS_BOOT, PID 1), setting the clock after a wake (CAP_SYS_TIME) and reseeding the
kernel's generator in a clone (CAP_SYS_ADMIN, for RNDADDENTROPY; both done by the
runtime's control thread in the app's process). Everything else is dropped: every other
capability, from the bounding set too, so nothing the app executes gets it back.
CAP_SYS_ADMIN also allows mounting, so a seccomp filter (with no_new_privs,
irreversible, inherited by every child) refuses the system calls no Python service
needs: mount and its kin, swap, kexec, module loading, namespaces, the kernel log, host
names, raw and packet sockets, and every x32 call. The interpreter can still start
itself (fork, exec of sys.executable).
"""

from __future__ import annotations

import ctypes
import errno
import os

# <linux/capability.h>
CAP_SYS_BOOT, CAP_SYS_TIME, CAP_SYS_ADMIN = 22, 25, 21
KEPT = (CAP_SYS_ADMIN, CAP_SYS_BOOT, CAP_SYS_TIME)
CAP_LAST = 40  # CAP_CHECKPOINT_RESTORE in 6.1
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

# <linux/prctl.h>
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP = 24, 38, 22
SECCOMP_MODE_FILTER = 2

# x86_64 system calls the app is refused (EPERM).
REFUSED = {
    "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "swapon": 167,
    "swapoff": 168, "sethostname": 170, "setdomainname": 171, "iopl": 172, "ioperm": 173,
    "init_module": 175, "delete_module": 176, "finit_module": 313, "kexec_load": 246,
    "kexec_file_load": 320, "acct": 163, "quotactl": 179, "syslog": 103,
    "unshare": 272, "setns": 308, "bpf": 321, "perf_event_open": 298,
    "userfaultfd": 323, "open_by_handle_at": 304, "add_key": 248, "request_key": 249,
    "keyctl": 250, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
    "fsmount": 432, "fspick": 433, "mount_setattr": 442,
}
SYS_SOCKET = 41
AF_PACKET, SOCK_RAW = 17, 3
AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000

# Classic BPF, as <linux/filter.h> and <linux/seccomp.h> spell it.
_LD_ABS_W, _JEQ, _JGE, _AND, _RET = 0x20, 0x15, 0x35, 0x54, 0x06
_RET_ALLOW, _RET_KILL = 0x7FFF0000, 0x80000000
_RET_EPERM = 0x00050000 | errno.EPERM
# struct seccomp_data: nr at 0, arch at 4, args[i] at 16 + 8 i (the low half first).
_NR, _ARCH, _ARG0, _ARG1 = 0, 4, 16, 24


def filter_program() -> list[tuple[int, int, int, int]]:
    """The seccomp filter as (code, jump if true, jump if false, k) instructions."""
    deny_at: list[int] = []  # indexes of jumps to the EPERM return, patched below
    prog: list[list[int]] = [
        [_LD_ABS_W, 0, 0, _ARCH],
        [_JEQ, 1, 0, AUDIT_ARCH_X86_64],
        [_RET, 0, 0, _RET_KILL],  # another ABI (i386 through int 0x80): never
        [_LD_ABS_W, 0, 0, _NR],
        [_JGE, 0, 0, X32_SYSCALL_BIT],
    ]
    deny_at.append(len(prog) - 1)
    for nr in sorted(REFUSED.values()):
        prog.append([_JEQ, 0, 0, nr])
        deny_at.append(len(prog) - 1)
    prog += [
        [_JEQ, 1, 0, SYS_SOCKET],
        [_RET, 0, 0, _RET_ALLOW],
        [_LD_ABS_W, 0, 0, _ARG0],  # socket(domain, type, protocol)
        [_JEQ, 0, 0, AF_PACKET],
    ]
    deny_at.append(len(prog) - 1)
    prog += [
        [_LD_ABS_W, 0, 0, _ARG1],
        [_AND, 0, 0, 0xF],  # the type without SOCK_NONBLOCK / SOCK_CLOEXEC
        [_JEQ, 0, 0, SOCK_RAW],
    ]
    deny_at.append(len(prog) - 1)
    prog.append([_RET, 0, 0, _RET_ALLOW])
    deny = len(prog)
    prog.append([_RET, 0, 0, _RET_EPERM])
    for i in deny_at:
        prog[i][1] = deny - i - 1  # jumps count from the next instruction
    return [(code, jt, jf, k) for code, jt, jf, k in prog]


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def confine(libc: ctypes.CDLL) -> None:
    """Drop the capabilities PID 1 does not need and install the filter; for good."""
    drop_capabilities(libc)
    install_filter(libc)


def drop_capabilities(libc: ctypes.CDLL) -> None:
    for cap in range(CAP_LAST + 1):
        # EINVAL: a capability this kernel does not know; nothing to drop.
        if cap not in KEPT and libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 \
                and ctypes.get_errno() != errno.EINVAL:
            _check(-1, f"dropping capability {cap}")
    mask = sum(1 << cap for cap in KEPT)  # all below 32: the first of the two words
    data = (_CapData * 2)(_CapData(mask, mask, 0), _CapData(0, 0, 0))
    _check(libc.capset(ctypes.byref(_CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)), data),
           "capset")


def install_filter(libc: ctypes.CDLL) -> None:
    """no_new_privs and the seccomp filter, for this process and all it starts."""
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    program = filter_program()
    filters = (_SockFilter * len(program))(*(_SockFilter(*i) for i in program))
    fprog = _SockFprog(len(program), filters)
    _check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0),
           "installing the seccomp filter")
