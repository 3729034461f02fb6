"""Fixtures shared by all test tiers; each lives in tests/fixtures/."""

pytest_plugins = ["tests.fixtures.etcd", "tests.fixtures.cluster"]
