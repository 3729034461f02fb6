"""Domain errors of the storage node, shared by the engine, the servicer and the client.

No gRPC here: the servicer maps these to wire statuses and the client maps wire statuses back, so
callers (the frontend, repair) only ever see these classes.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base class of every storage-node error; also raised for unexpected failures inside a node."""


class FragmentNotFound(StorageError):
    """The node holds no fragment under (chunk hash, fragment index, placement group)."""


class FragmentCorrupt(StorageError):
    """Stored or received fragment bytes fail their CRC32C, or the stored record is malformed."""


class StorageFull(StorageError):
    """The node refuses new writes: the volume chosen for the fragment is (nearly) out of space."""


class InvalidFragment(StorageError):
    """A malformed request: bad hash length or index, or data that does not match its checksum."""


class NodeUnavailable(StorageError):
    """Raised by the client only: the node did not answer in time, or the connection broke."""
