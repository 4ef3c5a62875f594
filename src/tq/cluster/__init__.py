"""Replication of core command batches (SPEC §12): the log entry format and the replica that
applies entries in order into its own store. Electing a leader and the etcd log live beside
these; a running cluster is not wired into the broker yet (``raft.*`` stays refused)."""
