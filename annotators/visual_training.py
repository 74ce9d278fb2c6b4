"""Gold spans on page text from visual completions, so the spaCy trainer can learn a
`visual_ner` model for a team's own forms.

Each page of an annotated document is read as the pipeline reads it (`task_pages.py`) and
becomes one training text; the completion's boxes on it map back to the words inside them
and so to character spans of the page text (`regions.region_spans`). A page without boxes
is a page without entities, which teaches the model too.
"""

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from preannotate.annotators.documents import DEFAULT_LIMITS, DocumentLimits
from preannotate.annotators.gold_items import not_offered
from preannotate.annotators.page_text import page_text
from preannotate.annotators.regions import region_spans
from preannotate.annotators.task_pages import document_pages
from preannotate.configs.errors import ConfigError
from preannotate.configs.labeling import LabelingConfig

Spans = list[tuple[int, int, str]]


def visual_gold(
    labeling: LabelingConfig,
    annotated: Iterable[tuple[int, dict[str, Any], list[dict[str, Any]]]],
    root: Path | None = None,
    limits: DocumentLimits = DEFAULT_LIMITS,
) -> tuple[list[str], list[str], list[Spans]]:
    """`(labels offered, page texts, gold spans per page)` from `(task id, task data,
    completion result)`; every problem (a label not offered, a document that cannot be
    read) is reported at once, before any training."""
    controls = {c.name: c for c in labeling.labels if c.kind == "rectanglelabels"}
    if not controls:
        raise ConfigError(["visual NER training needs a <RectangleLabels> control"])
    offered = sorted({lab.value for c in controls.values() for lab in c.labels})
    image = labeling.object_named(next(iter(controls.values())).to_name)
    if image is None:
        raise ConfigError(["the <RectangleLabels> control points at no <Image>"])
    texts: list[str] = []
    gold: list[Spans] = []
    problems = []
    for task_id, data, result in annotated:
        boxes = [i for i in result if i.get("type") == "rectanglelabels"]
        boxes = [i for i in boxes if i.get("from_name") in controls]
        if not boxes:
            continue
        for label in {lab for i in boxes for lab in i.get("value", {}).get("rectanglelabels", [])}:
            if label not in offered:
                problems.append(not_offered(task_id, "label", label))
        try:
            pages = document_pages(image, data, root, limits)
        except ValueError as exc:
            problems.append(f"task {task_id}: {exc}")
            continue
        for page in pages:
            text = page_text(page.page)
            on_page = [
                {k: v for k, v in i.items() if k != "item_index"}
                for i in boxes
                if i.get("item_index") == page.item_index
            ]
            spans = region_spans(on_page, [replace(page.page, index=0)], [text])
            texts.append(text.text)
            gold.append(spans.get(0, []))
    if problems:
        raise ConfigError(problems[:20])
    return offered, texts, gold
