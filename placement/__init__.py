"""Cluster map and placement: which nodes hold each placement group's fragments, and etcd plumbing.

Modules: ``cluster_map`` (the immutable, versioned map), ``rendezvous`` (pure placement),
``keys`` (etcd key layout), ``etcd`` (the only etcd client), ``registration`` (storage-node leases),
``service`` (the placement leader), ``watcher`` (following the published map).
"""

from placement.cluster_map import ClusterMap, FailureDomain, Node, NodeState, UnsupportedFormatVersion
from placement.rendezvous import InsufficientNodes, compute_acting_set, compute_acting_sets

__all__ = [
    "ClusterMap",
    "FailureDomain",
    "InsufficientNodes",
    "Node",
    "NodeState",
    "UnsupportedFormatVersion",
    "compute_acting_set",
    "compute_acting_sets",
]
