"""The scheduler actor: every deploy and delete, and (later) bulk and training jobs."""
