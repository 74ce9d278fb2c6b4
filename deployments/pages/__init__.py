"""The web pages under `/ui/`: server-rendered HTML over the same route functions as the
HTTP API, so every page checks the caller's role exactly as the API does."""
