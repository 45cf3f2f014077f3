"""The audit log: hash-chained events of every security-relevant action."""
