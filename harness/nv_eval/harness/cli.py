"""nv-eval-harness command (placeholder)."""


def main() -> None:
    raise SystemExit("nv-eval-harness: not built yet")
