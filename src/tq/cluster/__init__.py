"""Replication of core command batches through etcd (SPEC §12): the etcd client wrapper, the
leader election and the replicated command log (consensus is etcd's Raft; tq only fences its
writes with the leader's epoch), the log entry format, and the replica that applies entries in
order into its own store. No cluster is wired into the broker yet (``raft.*`` stays refused)."""
