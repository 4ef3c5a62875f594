"""Replication of core command batches through etcd (SPEC §12): the etcd client wrapper, the
leader election and the replicated command log (consensus is etcd's Raft; tq only fences its
writes with the leader's epoch), the log entry format, the replica that applies entries in
order into its own store, membership records, the log trim, and checkpoints for a node left
behind. No cluster is wired into the broker yet (``raft.*`` stays refused)."""
