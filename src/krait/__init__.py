"""krait: unikernels for Python.

This module stays import-free on purpose: the guest runtime (``krait.guest``) is
shipped inside every image and imports ``krait`` first, so anything imported here
would be paid for at every boot.
"""

__version__ = "0.1.0"
