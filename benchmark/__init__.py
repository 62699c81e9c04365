"""DisguiseBench: a benchmark of image disguising for privacy-preserving outsourced deep learning."""

__version__ = "0.1.0"
