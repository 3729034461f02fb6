"""The etcd key layout of one Coffer cluster, under a prefix (default ``/coffer/``).

| key | value |
|---|---|
| ``<prefix>nodes/<node_id>`` | ``NodeRegistration`` (bound to the node's lease) |
| ``<prefix>map`` | ``ClusterMap`` (written by the active placement service only) |
| ``<prefix>placement/leader`` | ``<instance_id>#<token>`` (bound to the leader's lease) |
| ``<prefix>drain/<node_id>`` | request to drain the node (UTF-8 Unix seconds of the request) |
| ``<prefix>repair/...`` | reserved for the repair queue |
| ``<prefix>config`` | reserved for cluster-wide settings |
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "/coffer/"


@dataclass(frozen=True)
class ClusterKeys:
    """Key names for the cluster stored under ``prefix`` (must end with ``/``).

    Raises:
        ValueError: on construction, if ``prefix`` does not end with ``/``.
    """

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not self.prefix.endswith("/"):
            raise ValueError(f"cluster key prefix must end with '/': {self.prefix!r}")

    @property
    def nodes_prefix(self) -> str:
        """Prefix of every node registration key."""
        return f"{self.prefix}nodes/"

    def node(self, node_id: str) -> str:
        """Registration key of ``node_id``.

        Raises:
            ValueError: if ``node_id`` is empty or contains ``/``.
        """
        if not node_id or "/" in node_id:
            raise ValueError(f"invalid node id {node_id!r}")
        return f"{self.nodes_prefix}{node_id}"

    def node_id_of(self, key: str) -> str:
        """Node id named by a registration key.

        Raises:
            ValueError: if ``key`` is not a registration key of this cluster.
        """
        if not key.startswith(self.nodes_prefix) or len(key) == len(self.nodes_prefix):
            raise ValueError(f"not a node registration key: {key!r}")
        return key[len(self.nodes_prefix):]

    @property
    def map(self) -> str:
        """Key of the published cluster map."""
        return f"{self.prefix}map"

    @property
    def placement_leader(self) -> str:
        """Key the placement services campaign for (held by the leader's lease)."""
        return f"{self.prefix}placement/leader"

    @property
    def drains_prefix(self) -> str:
        """Prefix of every drain request key."""
        return f"{self.prefix}drain/"

    def drain(self, node_id: str) -> str:
        """Drain request key of ``node_id``.

        Raises:
            ValueError: if ``node_id`` is empty or contains ``/``.
        """
        if not node_id or "/" in node_id:
            raise ValueError(f"invalid node id {node_id!r}")
        return f"{self.drains_prefix}{node_id}"

    def drained_node_id_of(self, key: str) -> str:
        """Node id named by a drain request key.

        Raises:
            ValueError: if ``key`` is not a drain request key of this cluster.
        """
        if not key.startswith(self.drains_prefix) or len(key) == len(self.drains_prefix):
            raise ValueError(f"not a drain request key: {key!r}")
        return key[len(self.drains_prefix):]

    @property
    def repair_prefix(self) -> str:
        """Reserved for the repair queue."""
        return f"{self.prefix}repair/"

    @property
    def config(self) -> str:
        """Reserved for cluster-wide settings."""
        return f"{self.prefix}config"
