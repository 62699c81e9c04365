"""Attacks: what the cloud can learn from disguised data, one per module."""
