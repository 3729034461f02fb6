"""Tests of metadata/."""
