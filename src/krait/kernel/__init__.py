"""The specialised kernel: config fragments, building it, caching it."""

from krait.kernel.build import (
    Kernel,
    build_kernel,
    count_build_steps,
    custom_kernel,
    find_kernel,
    find_source,
    fragment_files,
    kernel_format,
    merged_config,
    patch_files,
)

__all__ = [
    "Kernel",
    "build_kernel",
    "count_build_steps",
    "custom_kernel",
    "find_kernel",
    "find_source",
    "fragment_files",
    "kernel_format",
    "merged_config",
    "patch_files",
]
