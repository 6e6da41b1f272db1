"""The libvirt backend: the same VM as :mod:`krait.vmm.qemu`, as a libvirt domain.

libvirt is the engine that already manages QEMU on many hosts; through its Python binding
krait reaches a local ``libvirtd`` (``qemu:///system``) or one on another host
(``qemu+ssh://user@host/system``) the same way. The domain is made from the same
:class:`VmSpec`: microvm, the kernel booted directly, virtio-mmio disks (the image's
layers read-only), the console and the control port as the two serial ports, and QEMU's
user network, deny-by-default, with the ``-p`` forwards. libvirt has no element for a
restricted user network with forwards, so that one device is passed to QEMU as
arguments (``<qemu:commandline>``).

Everything crosses the libvirt connection, so a remote host needs nothing but libvirtd:

- the image's kernel and disks are copied into a storage pool on the host, named by
  their digest (a file already there is not copied again);
- the console and the control port are read and written through libvirt's console
  streams (the domain starts paused until both are open, so nothing the guest says is
  lost);
- liveness, pause, resume and the hard stop are libvirt calls.

Domains are transient (``krait-NAME``): once it ends, nothing of a VM is left on the host
but the image's files in the pool, which the next boot of the same image uses.
"""

from krait.vmm.libvirt.backend import LibvirtBackend, LibvirtVm
from krait.vmm.libvirt.connection import DEFAULT_URI, connect, host_of, is_local
from krait.vmm.libvirt.domain import QEMU_NS, Placed, domain_xml
from krait.vmm.libvirt.pool import POOL_ENV, Pool

__all__ = ["DEFAULT_URI", "POOL_ENV", "QEMU_NS", "LibvirtBackend", "LibvirtVm", "Placed", "Pool",
           "connect", "domain_xml", "host_of", "is_local"]
