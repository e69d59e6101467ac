"""nv-eval client: CLI, config composition, SDK, exporters."""
