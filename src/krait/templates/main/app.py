"""A job: krait calls main() in the VM, and its return value is the VM's exit status."""

import os
import sys


def main():
    words = os.environ.get("WORDS", "hello from a krait unikernel").split()
    print(f"{len(words)} words, the longest is {max(words, key=len)!r}")
    sys.stdout.flush()
    return 0
