import os

from flask import Flask

app = Flask(__name__)


def children_of(parent):
    """The processes whose parent is ``parent`` (as ps would list them)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append(int(pid))
    return sorted(found)


@app.get("/")
def index():
    return {"worker": os.getpid(), "parent": os.getppid(),
            "workers": children_of(os.getppid())}
