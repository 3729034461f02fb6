"""Prometheus metrics of the sync API (contracts §3); ``coffer_sync_longpoll_waiters`` lives with the
notifier and ``coffer_sync_chunk_bytes_total`` with the chunk transfer handlers."""

from __future__ import annotations

from prometheus_client import Counter

REQUESTS = Counter("coffer_sync_requests_total", "Sync API and chunk transfer requests answered",
                   ["operation", "status"])
COMMITS = Counter("coffer_sync_commits_total", "Sync upload sessions committed (conflict: stored as a "
                  "conflicted copy)", ["conflict"])
