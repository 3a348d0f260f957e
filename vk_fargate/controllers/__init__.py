"""The provider's reconcilers: pods (microVM <-> pod status, deletion) and virtual
nodes (all of them, one reconciler: registration, leases, status heartbeats).
"""
