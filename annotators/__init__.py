"""Documents in, regions out: the pre-annotation pipeline, with no Ray inside."""
