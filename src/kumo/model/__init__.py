"""Domain types shared by every part of kumo (no I/O). Pydantic models, frozen, so they
validate at every boundary: the API, the store and the agent read the same types."""
