"""Replication of core command batches (SPEC §12): the log entry format and the replica that
applies entries in order into its own store. Leader election and the log in etcd are built
beside these; no cluster is wired into the broker yet (``raft.*`` stays refused)."""
