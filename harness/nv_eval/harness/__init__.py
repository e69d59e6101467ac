"""nv-eval harness: the built-in benchmark runner."""
