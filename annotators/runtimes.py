"""Model runtimes: the small plugin interface every model framework implements.

A runtime loads one hub model once per process and annotates a batch of texts. spaCy is
built in; other frameworks (Spark NLP, transformers) register a runtime class under the
`preannotate.runtimes` entry-point group with the runtime name their manifests use.
"""

from collections.abc import Sequence
from importlib.metadata import entry_points

from preannotate.annotators.spans import Source, Span
from preannotate.hub.catalog import HubError, HubModel


class ModelRuntime:
    """Base class: override the methods for the kinds of model the runtime can serve."""

    def __init__(self, model: HubModel):
        self.model = model
        self.source = Source("model", model.name, model.manifest.version)

    def entities(self, texts: Sequence[str]) -> list[list[Span]]:
        """Whole entities (chunks, not token pieces) for each text."""
        raise HubError(f"the {self.model.manifest.runtime} runtime cannot run NER models")

    def classify(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """A score per class for each text."""
        raise HubError(f"the {self.model.manifest.runtime} runtime cannot run classifiers")


class SpacyRuntime(ModelRuntime):
    """spaCy pipelines: only the components the model's kind needs run, batched by nlp.pipe."""

    WANTED = {"ner": {"ner"}, "classification": {"textcat", "textcat_multilabel"}}
    BATCH_SIZE = 64

    def __init__(self, model: HubModel):
        import spacy

        super().__init__(model)
        location = model.manifest.package or model.weights_path()
        if location is None:
            raise HubError(f"model '{model.name}' names neither a package nor a weights path")
        try:
            self.nlp = spacy.load(location)
        except OSError as exc:
            raise HubError(f"model '{model.name}' could not be loaded: {exc}") from None
        wanted = self.WANTED.get(model.manifest.kind, set())
        keep = [name for name in self.nlp.pipe_names if name in wanted]
        for name in self.nlp.pipe_names:
            listeners = getattr(self.nlp.get_pipe(name), "listening_components", [])
            if set(listeners) & set(keep):
                keep.append(name)
        self.nlp.select_pipes(enable=keep)

    def entities(self, texts: Sequence[str]) -> list[list[Span]]:
        return [
            [Span(e.start_char, e.end_char, e.label_, self.source) for e in doc.ents]
            for doc in self.nlp.pipe(texts, batch_size=self.BATCH_SIZE)
        ]

    def classify(self, texts: Sequence[str]) -> list[dict[str, float]]:
        return [dict(doc.cats) for doc in self.nlp.pipe(texts, batch_size=self.BATCH_SIZE)]


BUILTIN_RUNTIMES: dict[str, type[ModelRuntime]] = {"spacy": SpacyRuntime}


def load_runtime(model: HubModel) -> ModelRuntime:
    """Instantiate the runtime a manifest names, built in or from an installed plugin."""
    name = model.manifest.runtime
    runtime = BUILTIN_RUNTIMES.get(name)
    if runtime is None:
        plugins = {ep.name: ep for ep in entry_points(group="preannotate.runtimes")}
        if name not in plugins:
            known = sorted({*BUILTIN_RUNTIMES, *plugins})
            raise HubError(
                f"model '{model.name}' needs the '{name}' runtime, which is not installed "
                f"(installed: {', '.join(known)})"
            )
        runtime = plugins[name].load()
    return runtime(model)
