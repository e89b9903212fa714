"""Context providers backed by the memory store; they register themselves in PROVIDERS."""
