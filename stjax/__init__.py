"""stjax: unsupervised spatiotemporal representation learning from video, in JAX."""

__version__ = "0.1.0"
