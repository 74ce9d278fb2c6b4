"""Documents in, regions out: the pre-annotation pipeline, with no Ray inside."""

import sys

# thinc, under spaCy, imports torch whenever it is installed: about 2.5 s more for every
# replica, actor and command that loads a spaCy model. Our spaCy pipelines run on numpy,
# so thinc is imported without torch here; zero-shot prompts import torch themselves.
if "thinc.compat" not in sys.modules and "torch" not in sys.modules:
    sys.modules["torch"] = None  # type: ignore[assignment]  # makes `import torch` fail
    try:
        import thinc.compat  # noqa: F401
    finally:
        del sys.modules["torch"]
