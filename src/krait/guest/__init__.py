"""The code that runs inside a krait VM as PID 1.

Standard library only, and imported at every boot, so it stays small. Nothing in
here acts unless it runs as PID 1 of a VM whose kernel command line carries
krait's marker (see :mod:`krait.guest.init`); ``tests/test_guest_boundary.py``
checks that no module here imports anything outside the standard library.
"""
