"""High availability: the pure decisions (who is recovered where, what a failed start leads
to). The effectful parts (leases, fencing, the leader's recovery pass) use these."""
