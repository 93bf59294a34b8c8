"""Services of the sync app: inbound engine, runs and leases, re-apply, opportunities."""
