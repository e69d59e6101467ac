"""Helpers that start real services for tests: NATS with JetStream, the SmolLM2 endpoint."""
