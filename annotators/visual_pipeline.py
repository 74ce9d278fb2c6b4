"""Pre-annotation of PDFs and images with the same models, rules and prompts as text.

Each task's document is read into pages of words with boxes (`documents.py`: the PDF text
layer, else Tesseract OCR); each page's text goes through the text `Pipeline` as one
document, built from the configuration seen as text (the `<Image>` read as its page text,
its `<RectangleLabels>` as `<Labels>`); every entity chunk found becomes one box per line
it spans (`regions.py`). A document that cannot be read (hostile, over a limit, an OCR
timeout, a reference the server may not open) fails its own task with the reason.
"""

from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from preannotate.annotators.documents import DEFAULT_LIMITS, DocumentLimits, page_image
from preannotate.annotators.layout import LayoutRuntime, VisualPage
from preannotate.annotators.llm import ProviderAccess
from preannotate.annotators.page_text import PageText, page_text
from preannotate.annotators.pipeline import Pipeline, task_data
from preannotate.annotators.regions import span_regions
from preannotate.annotators.results import TaskPrediction
from preannotate.annotators.spans import Source, Span
from preannotate.annotators.task_pages import DocumentPage, document_pages
from preannotate.configs.labeling import LabelingConfig
from preannotate.hub.catalog import Hub
from preannotate.hub.validation import ValidatedConfig

PAGE_FIELD = "page_text"
"""The task field the text pipeline reads a page's text from."""


def is_visual(labeling: LabelingConfig) -> bool:
    """Whether the configuration pre-annotates boxes on an image (validation makes sure it
    then pre-annotates nothing else)."""
    return any(c.kind == "rectanglelabels" for c in labeling.labels)


def text_view(labeling: LabelingConfig) -> LabelingConfig:
    """The configuration as the text pipeline sees one page."""
    objects = [
        o.model_copy(update={"kind": "text", "value": PAGE_FIELD, "value_list": False})
        if o.kind == "image"
        else o
        for o in labeling.objects
    ]
    labels = [c.model_copy(update={"kind": "labels"}) for c in labeling.labels]
    return labeling.model_copy(update={"objects": objects, "labels": labels})


def _span(item: dict[str, Any]) -> Span:
    """The chunk a text pipeline item stands for."""
    value, source = item["value"], item["provenance"]
    return Span(
        value["start"],
        value["end"],
        value["labels"][0],
        Source(source["type"], source["name"], source["version"]),
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
        self.text = Pipeline(replace(config, labeling=text_view(config.labeling)), hub)
        boxed = next(c for c in config.labeling.labels if c.kind == "rectanglelabels")
        image = config.labeling.object_named(boxed.to_name)
        assert image is not None  # validation checked that the control points at it
        self.image = image
        self.layout = [r for r in self.text.runtimes.values() if isinstance(r, LayoutRuntime)]

    def connect_providers(self, providers: Mapping[str, ProviderAccess]) -> None:
        """External prompts run in the text pipeline, page by page."""
        self.text.connect_providers(providers)

    def _pages(self, task: Any) -> list[tuple[DocumentPage, PageText]]:
        pages = document_pages(self.image, task_data(task), self.root, self.limits)
        return [(p, page_text(p.page)) for p in pages]

    def _visual_page(self, page: DocumentPage, text: PageText) -> VisualPage:
        image = partial(page_image, page.path, page.page.index, page.path.name, self.limits)
        return VisualPage(page.page, text, page.item_index, image)

    def annotate(self, tasks: Sequence[Any]) -> list[TaskPrediction]:
        """One prediction per task, in order: the regions of every page of its document,
        or the reason it failed."""
        documents: list[list[tuple[DocumentPage, PageText]] | str] = []
        for task in tasks:
            try:
                documents.append(self._pages(task))
            except ValueError as exc:
                documents.append(str(exc))
            except Exception as exc:  # a hostile file may break the reader in other ways
                documents.append(f"the document could not be read: {type(exc).__name__}: {exc}")
        pages = [page for doc in documents if not isinstance(doc, str) for page in doc]
        for runtime in self.layout:
            runtime.pages = {text.text: self._visual_page(p, text) for p, text in pages}
        found = iter(self.text.annotate([{"data": {PAGE_FIELD: t.text}} for _, t in pages]))
        predictions = []
        for task, doc in zip(tasks, documents, strict=True):
            task_id = task.get("id") if isinstance(task, dict) else None
            if isinstance(doc, str):
                predictions.append(TaskPrediction(task_id, self.config.hash, error=doc))
                continue
            result, errors = [], []
            for page, text in doc:
                prediction = next(found)
                if prediction.error is not None:
                    errors.append(f"page {page.page.index + 1}: {prediction.error}")
                for item in prediction.result:
                    if item["type"] == "labels":
                        result += span_regions(
                            _span(item),
                            page.page,
                            text,
                            item["from_name"],
                            item["to_name"],
                            page.item_index,
                        )
            error = "; ".join(errors) or None
            predictions.append(TaskPrediction(task_id, self.config.hash, result, error))
        return predictions


def pipeline_for(
    config: ValidatedConfig, hub: Hub | None = None, root: Path | None = None
) -> Pipeline | VisualPipeline:
    """The pipeline a configuration needs: visual when it draws boxes on an image."""
    if is_visual(config.labeling):
        return VisualPipeline(config, hub, root)
    return Pipeline(config, hub)
