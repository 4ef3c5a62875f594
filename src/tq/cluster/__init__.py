"""A tq cluster's side of etcd: the client wrapper, the leader election and the replicated
command log. Consensus is etcd's (Raft); tq only fences its writes with the leader's epoch."""
