"""Sharded datasets, streamed in bounded memory: listing, reading, splitting, batching."""
