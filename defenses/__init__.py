"""Defenses: image disguising schemes, one per module."""
