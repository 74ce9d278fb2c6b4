"""The `preannotate` command line and the Python client."""
