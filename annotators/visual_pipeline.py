"""Pre-annotation of PDFs and images with the same models, rules and prompts as text.

Each task's document is read into pages of words with boxes (`documents.py`: the PDF text
layer, else Tesseract OCR). Each page's text goes through the text `Pipeline` as one
document, built from the configuration seen as text (the `<Image>` read as its page text,
its `<RectangleLabels>` as `<Labels>`): every entity chunk found becomes one box per line
it spans (`regions.py`), and a relation between two chunks joins their first boxes. The
document's classes (`<Choices>` on the `<Image>` with a model or prompt) come from a
second text pipeline over the whole document's text, its pages one after another. A
document that cannot be read (hostile, over a limit, an OCR timeout, a reference the
server may not open) fails its own task with the reason.
"""

from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from preannotate.annotators.documents import DEFAULT_LIMITS, DocumentLimits, page_image
from preannotate.annotators.layout import LayoutRuntime, VisualPage
from preannotate.annotators.llm import ProviderAccess, Usage
from preannotate.annotators.page_text import PageText, page_text
from preannotate.annotators.pipeline import Pipeline, task_data
from preannotate.annotators.regions import span_regions
from preannotate.annotators.results import TaskPrediction, relation_item
from preannotate.annotators.spans import Source, Span
from preannotate.annotators.task_pages import DocumentPage, document_pages
from preannotate.configs.labeling import LabelingConfig, ObjectTag
from preannotate.configs.prompts import zero_shot_model
from preannotate.hub.catalog import Hub
from preannotate.hub.validation import ValidatedConfig

PAGE_FIELD = "page_text"
"""The task field the text pipeline reads a page's text from."""
DOCUMENT_FIELD = "document_text"
"""The task field the classes' pipeline reads a whole document's text from."""
PAGE_BREAK = "\n\n"
"""Between two pages in a document's text."""


def visual_image(labeling: LabelingConfig) -> ObjectTag | None:
    """The `<Image>` the configuration pre-annotates (with boxes, or with classes from a
    model or prompt), if any; validation makes sure there is at most one and that the
    configuration then pre-annotates no text."""
    images = {o.name: o for o in labeling.objects if o.kind == "image"}
    targets = [c.to_name for c in labeling.labels if c.kind == "rectanglelabels"]
    targets += [c.to_name for c in labeling.choices if c.model or c.prompt]
    return next((images[t] for t in targets if t in images), None)


def is_visual(labeling: LabelingConfig) -> bool:
    """Whether the configuration pre-annotates an image rather than text."""
    return visual_image(labeling) is not None


def text_view(labeling: LabelingConfig, field: str) -> LabelingConfig:
    """The configuration as a text pipeline sees the image: a text read from `field`."""
    objects = [
        o.model_copy(update={"kind": "text", "value": field, "value_list": False})
        if o.kind == "image"
        else o
        for o in labeling.objects
    ]
    labels = [c.model_copy(update={"kind": "labels"}) for c in labeling.labels]
    return labeling.model_copy(update={"objects": objects, "labels": labels})


def narrowed(config: ValidatedConfig, labeling: LabelingConfig) -> ValidatedConfig:
    """The configuration with only what `labeling` names: its prompts, the models it and
    those prompts run on, and the rules only if it has labels for them, so each of the two
    text pipelines runs only its own."""
    prompts = {n: p for n, p in config.prompts.items() if n in labeling.prompts()}
    used = set(labeling.models()) | {zero_shot_model(p) for p in prompts.values()}
    models = {n: m for n, m in config.models.items() if n in used}
    rules = config.rules if labeling.labels else []
    return replace(config, labeling=labeling, prompts=prompts, models=models, rules=rules)


def _source(provenance: dict[str, Any]) -> Source:
    return Source(provenance["type"], provenance["name"], provenance["version"])


def _span(item: dict[str, Any]) -> Span:
    """The chunk a text pipeline item stands for."""
    value = item["value"]
    return Span(
        value["start"],
        value["end"],
        value["labels"][0],
        _source(item["provenance"]),
        value.get("confidence"),
    )


def project_limits(config: ValidatedConfig) -> DocumentLimits:
    """The document limits with the project's own DPI, OCR languages, time and pages."""
    return replace(DEFAULT_LIMITS, **config.project.documents.model_dump())


class VisualPipeline:
    def __init__(
        self,
        config: ValidatedConfig,
        hub: Hub | None = None,
        root: Path | None = None,
        limits: DocumentLimits | None = None,
    ):
        self.config, self.root = config, root
        self.limits = limits or project_limits(config)
        labeling = config.labeling
        image = visual_image(labeling)
        assert image is not None  # pipeline_for chose this pipeline because there is one
        self.image = image
        pages = text_view(labeling, PAGE_FIELD).model_copy(update={"choices": []})
        self.text = Pipeline(narrowed(config, pages), hub)
        classes = text_view(labeling, DOCUMENT_FIELD).model_copy(
            update={"labels": [], "relations": []}
        )
        self.classes = (
            Pipeline(narrowed(config, classes), hub, loaded=self.text.runtimes)
            if any(c.model or c.prompt for c in classes.choices)
            else None
        )
        self.layout = [r for r in self.text.runtimes.values() if isinstance(r, LayoutRuntime)]

    def connect_providers(self, providers: Mapping[str, ProviderAccess]) -> None:
        """External prompts run in the text pipelines, page by page and document by
        document."""
        self.text.connect_providers(providers)
        if self.classes is not None:
            self.classes.connect_providers(providers)

    def _pages(self, task: Any) -> list[tuple[DocumentPage, PageText]]:
        pages = document_pages(self.image, task_data(task), self.root, self.limits)
        return [(p, page_text(p.page)) for p in pages]

    def _visual_page(self, page: DocumentPage, text: PageText) -> VisualPage:
        image = partial(page_image, page.path, page.page.index, page.path.name, self.limits)
        return VisualPage(page.page, text, page.item_index, image)

    def _page_result(
        self, page: DocumentPage, text: PageText, result: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """A page's chunks as boxes, and its relations between their first boxes."""
        regions, first_box = [], {}
        for item in result:
            if item["type"] == "labels":
                boxes = span_regions(
                    _span(item),
                    page.page,
                    text,
                    item["from_name"],
                    item["to_name"],
                    page.item_index,
                )
                if boxes:
                    first_box[item["id"]] = boxes[0]["id"]
                regions += boxes
        for item in result:
            ends = (first_box.get(item.get("from_id")), first_box.get(item.get("to_id")))
            if item["type"] == "relation" and None not in ends:
                source = _source(item["provenance"])
                regions.append(relation_item(*ends, item["labels"][0], source))
        return regions

    def annotate(self, tasks: Sequence[Any]) -> list[TaskPrediction]:
        """One prediction per task, in order: the regions of every page of its document
        and the document's classes, or the reason it failed; its usage adds up the
        external prompts' calls of all its pages and of the document."""
        documents: list[list[tuple[DocumentPage, PageText]] | str] = []
        for task in tasks:
            try:
                documents.append(self._pages(task))
            except ValueError as exc:
                documents.append(str(exc))
            except Exception as exc:  # a hostile file may break the reader in other ways
                documents.append(f"the document could not be read: {type(exc).__name__}: {exc}")
        read = [doc for doc in documents if not isinstance(doc, str)]
        pages = [page for doc in read for page in doc]
        for runtime in self.layout:
            runtime.pages = {text.text: self._visual_page(p, text) for p, text in pages}
        found = iter(self.text.annotate([{"data": {PAGE_FIELD: t.text}} for _, t in pages]))
        classes = iter(
            self.classes.annotate(
                [
                    {"data": {DOCUMENT_FIELD: PAGE_BREAK.join(t.text for _, t in doc)}}
                    for doc in read
                ]
            )
            if self.classes is not None
            else []
        )
        predictions = []
        for task, doc in zip(tasks, documents, strict=True):
            task_id = task.get("id") if isinstance(task, dict) else None
            if isinstance(doc, str):
                predictions.append(TaskPrediction(task_id, self.config.hash, error=doc))
                continue
            parts = []  # (where, its text pipeline prediction, its result items)
            for page, text in doc:
                prediction = next(found)
                items = self._page_result(page, text, prediction.result)
                parts.append((f"page {page.page.index + 1}", prediction, items))
            if self.classes is not None:
                prediction = next(classes)
                parts.append(("the document's classes", prediction, prediction.result))
            result = [item for _, _, items in parts for item in items]
            errors = [f"{where}: {p.error}" for where, p, _ in parts if p.error is not None]
            error = "; ".join(errors) or None
            usage = Usage()
            for _, prediction, _ in parts:
                usage.add(Usage(**(prediction.usage or {})))
            cost = usage.as_json() if usage.llm_requests else None
            predictions.append(TaskPrediction(task_id, self.config.hash, result, error, cost))
        return predictions


def pipeline_for(
    config: ValidatedConfig, hub: Hub | None = None, root: Path | None = None
) -> Pipeline | VisualPipeline:
    """The pipeline a configuration needs: visual when it pre-annotates an image."""
    if is_visual(config.labeling):
        return VisualPipeline(config, hub, root)
    return Pipeline(config, hub)
