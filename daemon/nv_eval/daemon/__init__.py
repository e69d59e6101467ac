"""nv-eval daemon: plans invocations, dispatches jobs, folds events into state."""
