"""Speed and quality benchmarks (``derain bench``, ``benchmarks/``)."""
