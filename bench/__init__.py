"""Coffer's S3 benchmark harness (``coffer bench``).

Measures any S3 endpoint over HTTP with boto3 (Coffer's dev cluster, or a peer such as OpenStack
Swift): PUT/GET throughput, request rate, latency percentiles and server CPU-seconds per GB, next
to single-core ceilings of the primitives a PUT or GET needs (SHA-256, MD5, RS 10+4 encode).

Modules: ``units`` (sizes), ``stats`` (percentiles), ``server_cpu`` (CPU time of server process
trees from /proc), ``ceilings`` (primitive speeds), ``s3bench`` (the PUT/GET runs), ``report``
(tables, JSON, side-by-side comparison), ``progress`` (stderr progress), ``cli`` (``main``).
Dependencies: boto3 and pyeclib only; nothing of Coffer but ``common.malloc``.
"""
