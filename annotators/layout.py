"""The runtime interface of layout-aware models (`visual_ner`): they read a page's image and
its words with boxes, not only its text.

A plugin subclasses `LayoutRuntime`, implements `page_entities`, and registers the class
under the `preannotate.runtimes` entry-point group with the runtime name its manifest
uses. Its spans are offsets into the page text, like every NER model's, so rules, prompts
and the overlap policy treat them alike and the visual pipeline draws them as boxes.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from preannotate.annotators.documents import Page
from preannotate.annotators.page_text import PageText
from preannotate.annotators.runtimes import ModelRuntime
from preannotate.annotators.spans import Span
from preannotate.hub.catalog import HubError, HubModel


@dataclass(frozen=True)
class VisualPage:
    """One page as a layout-aware model reads it. `image` renders the page (a PIL image)
    only when called, so models that need no pixels cost no rendering."""

    page: Page
    text: PageText
    item_index: int | None
    image: Callable[[], Any]


class LayoutRuntime(ModelRuntime):
    """Base class of layout-aware runtimes. The pipeline hands every model page texts;
    the visual pipeline puts the pages those texts come from in `pages` first."""

    KINDS = frozenset({"visual_ner"})

    def __init__(self, model: HubModel):
        super().__init__(model)
        self.pages: dict[str, VisualPage] = {}

    def entities(self, texts: Sequence[str]) -> list[list[Span]]:
        return self.page_entities([self.pages[text] for text in texts])

    def page_entities(self, pages: Sequence[VisualPage]) -> list[list[Span]]:
        """Whole entities of each page, as character offsets into `page.text.text`."""
        raise HubError(f"the {self.model.manifest.runtime} runtime reads no pages")
