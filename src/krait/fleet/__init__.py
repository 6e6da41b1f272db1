"""krait fleet: instances on disk, the supervisor, the on-demand gateway, snapshots."""
