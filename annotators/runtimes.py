"""Model runtimes: the small plugin interface every model framework implements.

A runtime loads one hub model once per process and annotates a batch of texts. Built in:
spaCy (NER, classification, and trained assertion and relation classifiers over marked
chunks), ConText (assertion status from a lexicon), rule relations and zero-shot prompts on
sentence embeddings (`zero_shot.py`);
other frameworks (Spark NLP, transformers) register a runtime class under the
`preannotate.runtimes` entry-point group with the runtime name their manifests use.
"""

from collections.abc import Sequence
from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path

from pydantic import TypeAdapter

from preannotate.annotators.context import ContextModel
from preannotate.annotators.marked import predict_assertions, predict_relations
from preannotate.annotators.relations import Relation, RuleRelations
from preannotate.annotators.sentences import Sentences
from preannotate.annotators.spans import Source, Span
from preannotate.configs.project import ProjectConfig
from preannotate.configs.prompts import ClassificationPrompt, EntityPrompt, RelationPrompt
from preannotate.configs.relations import RelationRule
from preannotate.configs.textfiles import read_json_as
from preannotate.hub.catalog import HubError, HubModel

LEXICON_FILE = "lexicon.json"
RULES_FILE = "rules.json"


class ModelRuntime:
    """Base class: override the methods for the kinds of model the runtime can serve, and
    list those kinds in KINDS so that a configuration it cannot serve is refused up front."""

    KINDS: frozenset[str] = frozenset()

    def __init__(self, model: HubModel):
        self.model = model
        self.source = Source("model", model.name, model.manifest.version)

    @classmethod
    def unavailable(cls) -> str | None:
        """Why the runtime cannot load models on this machine (a missing jar), checked
        before a configuration deploys; None when it can."""
        return None

    def configure(self, project: ProjectConfig) -> None:
        """Read what a project adds to the model (relation rules); nothing by default."""

    def assertions(
        self, docs: Sequence[Sentences], chunks: Sequence[Sequence[Span]]
    ) -> list[list[str | None]]:
        """A status (or None) for each chunk of each document."""
        raise HubError(f"the {self.model.manifest.runtime} runtime cannot run assertion models")

    def relations(
        self, docs: Sequence[Sentences], chunks: Sequence[Sequence[Span]]
    ) -> list[list[Relation]]:
        """`(from chunk index, to chunk index, relation)` for each document."""
        raise HubError(f"the {self.model.manifest.runtime} runtime cannot run relation models")

    def entities(self, texts: Sequence[str]) -> list[list[Span]]:
        """Whole entities (chunks, not token pieces) for each text."""
        raise HubError(f"the {self.model.manifest.runtime} runtime cannot run NER models")

    def classify(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """A score per class for each text."""
        raise HubError(f"the {self.model.manifest.runtime} runtime cannot run classifiers")

    # Zero-shot prompts (models of kind zero_shot): the prompts come with each call, and
    # every region carries the provenance of the prompt that found it.

    def prompt_entities(
        self, docs: Sequence[Sentences], prompts: Sequence[EntityPrompt]
    ) -> list[list[Span]]:
        """Whole, non-overlapping chunks the entity prompts of one `<Labels>` find."""
        raise HubError(f"the {self.model.manifest.runtime} runtime cannot run prompts")

    def prompt_classes(
        self, docs: Sequence[Sentences], prompt: ClassificationPrompt, multiple: bool
    ) -> list[dict[str, float]]:
        """The classes picked for each document (one unless `multiple`), with confidence."""
        raise HubError(f"the {self.model.manifest.runtime} runtime cannot run prompts")

    def prompt_relations(
        self,
        docs: Sequence[Sentences],
        chunks: Sequence[Sequence[Span]],
        prompts: Sequence[RelationPrompt],
    ) -> list[list[Relation]]:
        """`(from chunk index, to chunk index, relation)` the relation prompts find."""
        raise HubError(f"the {self.model.manifest.runtime} runtime cannot run prompts")


class SpacyRuntime(ModelRuntime):
    """spaCy pipelines: only the components the model's kind needs run, batched by nlp.pipe.
    A trained assertion or relation model is a text classifier that reads chunks marked in
    their context (`annotators/marked.py`)."""

    KINDS = frozenset({"ner", "classification", "assertion", "relation", "visual_ner"})

    CLASSIFIERS = {"textcat", "textcat_multilabel"}
    WANTED = {
        "ner": {"ner"},
        "visual_ner": {"ner"},  # trained on page text (`annotators/visual_training.py`)
        "classification": CLASSIFIERS,
        "assertion": CLASSIFIERS,
        "relation": CLASSIFIERS,
    }
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

    def assertions(
        self, docs: Sequence[Sentences], chunks: Sequence[Sequence[Span]]
    ) -> list[list[str | None]]:
        return predict_assertions(self.nlp, docs, chunks)

    def relations(
        self, docs: Sequence[Sentences], chunks: Sequence[Sequence[Span]]
    ) -> list[list[Relation]]:
        return predict_relations(self.nlp, docs, chunks)


def _data_file(model: HubModel, name: str) -> Path:
    """A data file of a model whose folder holds the model itself (a lexicon, rules)."""
    if model.folder is None or not (model.folder / name).is_file():
        raise HubError(f"model '{model.name}' has no {name} in its folder")
    return model.folder / name


class ContextRuntime(ModelRuntime):
    """The ConText algorithm over the lexicon in the model folder (`annotators/context.py`)."""

    KINDS = frozenset({"assertion"})

    def __init__(self, model: HubModel):
        super().__init__(model)
        try:
            self.context = ContextModel.load(_data_file(model, LEXICON_FILE), model.manifest.labels)
        except ValueError as exc:
            raise HubError(f"model '{model.name}': {exc}") from None

    def assertions(
        self, docs: Sequence[Sentences], chunks: Sequence[Sequence[Span]]
    ) -> list[list[str | None]]:
        return [
            [self.context.status(doc.text, c.start, c.end, doc) for c in spans]
            for doc, spans in zip(docs, chunks, strict=True)
        ]


RULE_LIST = TypeAdapter(list[RelationRule])


class RuleRelationRuntime(ModelRuntime):
    """Declarative relation rules: the model folder's, then the project's."""

    KINDS = frozenset({"relation"})

    def __init__(self, model: HubModel):
        super().__init__(model)
        file = _data_file(model, RULES_FILE)
        try:
            rules = read_json_as(file, RULE_LIST)
        except ValueError as exc:
            raise HubError(str(exc)) from None
        self.rules = RuleRelations(rules)

    def configure(self, project: ProjectConfig) -> None:
        self.rules = RuleRelations([*self.rules.rules, *project.relation_rules])

    def relations(
        self, docs: Sequence[Sentences], chunks: Sequence[Sequence[Span]]
    ) -> list[list[Relation]]:
        return [self.rules.find(doc, spans) for doc, spans in zip(docs, chunks, strict=True)]


BUILTIN_RUNTIMES: dict[str, type[ModelRuntime]] = {
    "spacy": SpacyRuntime,
    "context": ContextRuntime,
    "relation_rules": RuleRelationRuntime,
}


RUNTIME_MODULES = {
    "spark-nlp": "preannotate.annotators.spark_nlp:SparkNlpRuntime",
    "sentence-transformers": "preannotate.annotators.zero_shot:SentenceEmbeddingRuntime",
}
"""Built-in runtimes in modules of their own, imported when a manifest names them (their
modules subclass ModelRuntime, so this module names them rather than importing them)."""


def builtin_runtime(name: str) -> type[ModelRuntime] | None:
    """The built-in runtime class of that name, or None."""
    if name in RUNTIME_MODULES:
        module, attribute = RUNTIME_MODULES[name].split(":")
        return getattr(import_module(module), attribute)
    return BUILTIN_RUNTIMES.get(name)


def load_runtime(model: HubModel) -> ModelRuntime:
    """Instantiate the runtime a manifest names, built in or from an installed plugin."""
    name = model.manifest.runtime
    runtime = builtin_runtime(name)
    if runtime is None:
        plugins = {ep.name: ep for ep in entry_points(group="preannotate.runtimes")}
        if name not in plugins:
            known = sorted({*BUILTIN_RUNTIMES, *RUNTIME_MODULES, *plugins})
            raise HubError(
                f"model '{model.name}' needs the '{name}' runtime, which is not installed "
                f"(installed: {', '.join(known)})"
            )
        runtime = plugins[name].load()
    return runtime(model)
