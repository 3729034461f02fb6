"""Pieces every Coffer process shares: stripe layout constants, logging, metrics, malloc tuning."""
