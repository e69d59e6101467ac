"""Wire-protocol version carried by every message on the bus."""

PROTOCOL_VERSION = 1
