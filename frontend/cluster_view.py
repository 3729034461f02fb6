"""The frontend's view of the cluster map, as the data path asks for it."""

from __future__ import annotations

from placement.cluster_map import ClusterMap, NodeState
from placement.watcher import ClusterMapWatcher


class ClusterMapUnavailable(Exception):
    """No cluster map has been loaded yet (etcd unreachable since start, or none published)."""


class ClusterView:
    """Wraps a :class:`ClusterMapWatcher`; ``current()`` is what :class:`ChunkStore` calls per stripe."""

    def __init__(self, watcher: ClusterMapWatcher) -> None:
        self._watcher = watcher

    def current(self) -> ClusterMap:
        """The newest cluster map seen.

        Raises:
            ClusterMapUnavailable: none loaded yet (answered as 503 so clients retry).
        """
        try:
            cluster_map = self._watcher.current
        except Exception as exc:  # the watcher raises until its first map arrives
            raise ClusterMapUnavailable("no cluster map loaded yet") from exc
        if cluster_map is None:
            raise ClusterMapUnavailable("no cluster map loaded yet")
        return cluster_map

    def up_nodes(self) -> int:
        """How many nodes the current map lists as up (0 without a map)."""
        try:
            cluster_map = self.current()
        except ClusterMapUnavailable:
            return 0
        return sum(1 for node in cluster_map.nodes.values() if node.state == NodeState.UP)
