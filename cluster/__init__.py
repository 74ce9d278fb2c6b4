"""The Ray cluster as a resource: start/connect, capacity checks, licenses, server registry."""
