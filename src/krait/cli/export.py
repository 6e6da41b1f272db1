"""``krait export IMAGE``: the image for another engine — an OCI image layout (KubeVirt's
kernelBoot, Flintlock), or the libvirt domain krait would start."""

from __future__ import annotations

from pathlib import Path

import click

from krait.cli._output import err_console
from krait.cli.run import parse_publish
from krait.errors import ConfigError
from krait.image.oci import export_layout
from krait.vmm.backends import get_backend
from krait.vmm.launch import RunOptions, prepare


@click.command("export")
@click.argument("image", type=click.Path(path_type=Path))
@click.option("--oci", "oci_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Write an OCI image layout here: the kernel at /boot/vmlinux, the disks "
              "under /disks, the kernel command line in /krait/cmdline.")
@click.option("--tag", default="latest", show_default=True, help="The layout's reference name.")
@click.option("--libvirt-xml", is_flag=True,
              help="Print the libvirt domain (the files as they are in krait's storage pool).")
@click.option("-p", "--publish", multiple=True, metavar="HOST:GUEST",
              help="With --libvirt-xml: the port forwards of the domain.")
def command(image: Path, oci_dir: Path | None, tag: str, libvirt_xml: bool,
            publish: tuple[str, ...]) -> None:
    """Write IMAGE for another engine: --oci DIR or --libvirt-xml."""
    if (oci_dir is None) == (not libvirt_xml):
        raise ConfigError("say what to export: --oci DIR or --libvirt-xml (one of them)")
    img, spec = prepare(image, RunOptions(ports=parse_publish(publish)))
    if libvirt_xml:
        click.echo(get_backend("libvirt").describe(spec), nl=False)
        return
    assert oci_dir is not None
    disks = [(d.name, d.path) for d in spec.disks]
    digest = export_layout(img, spec.kernel, disks, " ".join(spec.cmdline), oci_dir, tag)
    err_console.print(f"krait: wrote {img.name} as an OCI image layout in {oci_dir}")
    click.echo(digest)
