"""Storage nodes: fragments of erasure-coded stripes kept in RocksDB volumes, served over gRPC.

Modules: ``errors`` (domain errors), ``records`` (plain result records), ``engine`` (the RocksDB
fragment store, no gRPC), ``servicer`` (thin gRPC servicer), ``server`` (the node process),
``client`` (async client and pool used by the frontend). Importing this package imports none of
them, so ``storagenode.client`` users do not load RocksDB.
"""
