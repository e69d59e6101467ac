"""One module per ``nv-eval`` command; each is imported only when its command runs."""
