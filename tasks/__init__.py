"""Tasks: a dataset, a model architecture and a training recipe, one per module."""
