"""Training: data sources, losses, the training loop (``derain train``)."""
