"""The nv-eval command line (placeholder until the CLI lands)."""


def main() -> None:
    raise SystemExit("nv-eval: not built yet")
