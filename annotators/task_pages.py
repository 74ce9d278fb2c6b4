"""The pages a visual task's data names, read for pre-annotation or drawn for a person.

A task names its document under the `<Image>`'s key: one reference, whose pages are all
annotated (regions carry the page as `item_index` when it has several), or for
`<Image valueList=...>` a list with one reference per page (`file://<sha>#page=<n>`),
whose position is the page's `item_index`. References resolve through
`configs/files.py`, so nothing else on disk or on the network is ever opened.
"""

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from preannotate.annotators.documents import (
    DEFAULT_LIMITS,
    Document,
    DocumentLimits,
    Page,
    open_document,
)
from preannotate.annotators.render import render_page
from preannotate.configs.files import resolve
from preannotate.configs.labeling import ObjectTag


@dataclass(frozen=True)
class PageRef:
    """One page of a task: the file, the page in it (from 0), and its `item_index`."""

    path: Path
    index: int
    item_index: int | None


@dataclass(frozen=True)
class DocumentPage:
    """A page of a task read into words with boxes."""

    path: Path
    page: Page
    item_index: int | None


@contextmanager
def _documents(limits: DocumentLimits) -> Iterator[Callable[[Path], Document]]:
    """A function that opens each file the first time it is asked for (`open_document`) and
    then hands out the same document; all of them are closed at the end of the block. A
    task's files thus stay open together, from counting their pages until they are read."""
    with ExitStack() as stack:
        opened: dict[Path, Document] = {}

        def document(path: Path) -> Document:
            if path not in opened:
                opened[path] = stack.enter_context(open_document(path, path.name, limits))
            return opened[path]

        yield document


def page_refs(
    image: ObjectTag, data: dict[str, Any], root: Path | None, document: Callable[[Path], Document]
) -> list[PageRef]:
    """The task's pages, in order, each file opened through `document` and its pages
    counted, with no OCR. Raises `ValueError` (a `DocumentError` or a refused reference)
    with the reason."""
    value = data.get(image.value)
    if value is None or value == "":
        raise ValueError(image.missing())
    refs = value if image.value_list else [value]
    if not isinstance(refs, list) or not refs:
        raise ValueError(f"data.{image.value} must list the document's pages")
    out = []
    for position, ref in enumerate(refs):
        found = resolve(ref, root)
        count = document(found.path).pages
        if found.page is not None and found.page >= count:
            raise ValueError(f"'{ref}' names page {found.page + 1}; the document has {count}")
        if image.value_list:
            out.append(PageRef(found.path, found.page or 0, position))
        elif found.page is not None:
            out.append(PageRef(found.path, found.page, None))
        else:
            out += [PageRef(found.path, i, i if count > 1 else None) for i in range(count)]
    return out


def document_pages(
    image: ObjectTag, data: dict[str, Any], root: Path | None, limits: DocumentLimits
) -> list[DocumentPage]:
    """The task's pages with their words. Every file is opened and its pages counted
    first, without OCR, so a reference to a page a document lacks is refused before
    anything is read; then only the pages the task names are read."""
    with _documents(limits) as document:
        refs = page_refs(image, data, root, document)
        wanted: dict[Path, set[int]] = {}
        for ref in refs:
            wanted.setdefault(ref.path, set()).add(ref.index)
        read = {
            path: {page.index: page for page in document(path).read(indexes)}
            for path, indexes in wanted.items()
        }
    return [DocumentPage(ref.path, read[ref.path][ref.index], ref.item_index) for ref in refs]


def rendered_pages(
    image: ObjectTag,
    data: dict[str, Any],
    result: list[dict[str, Any]],
    root: Path | None = None,
    limits: DocumentLimits = DEFAULT_LIMITS,
    page: int | None = None,
) -> list[tuple[int, bytes]]:
    """`(page number from 1, PNG)` of each page (or only `page`) with the regions of
    `result` that lie on it drawn."""
    with _documents(limits) as document:
        refs = page_refs(image, data, root, document)
        if page is not None and not 1 <= page <= len(refs):
            raise ValueError(f"the task has {len(refs)} page(s); there is no page {page}")
        out = []
        for number, ref in enumerate(refs, 1):
            if page is not None and number != page:
                continue
            regions = [item for item in result if item.get("item_index") == ref.item_index]
            picture = document(ref.path).image(ref.index)
            out.append((number, render_page(picture, regions)))
    return out
