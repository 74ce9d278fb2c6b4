"""Chunks on a page -> Label Studio rectangle regions, and regions back to chunks.

A chunk (a `Span` in the page text) becomes one `rectanglelabels` region per line it
spans: the union of its words' boxes on that line, in percent of the page, so a multi-word
entity is one box, not one per token. The chunk's text rides along as Label Studio's OCR
template carries it: `meta.text` on the region and, when the configuration has a
per-region `<TextArea>`, a `textarea` item with the same id. All regions of one chunk
share `chunk.id`, which lets completions map back to whole chunks for training.
"""

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from preannotate.annotators.documents import Page, Word
from preannotate.annotators.page_text import PageText
from preannotate.annotators.results import item_id
from preannotate.annotators.spans import Span


def span_regions(
    span: Span,
    page: Page,
    text: PageText,
    from_name: str,
    to_name: str,
    item_index: int | None = None,
    transcription: str | None = None,
) -> list[dict[str, Any]]:
    """The result items of one chunk: a region per line (and its transcription item)."""
    lines: dict[int, list[int]] = {}
    for index in text.words_in(span.start, span.end):
        lines.setdefault(page.words[index].line, []).append(index)
    chunk_id = item_id(from_name, item_index, span.start, span.end, span.label)
    chunk = {"id": chunk_id, "text": text.text[span.start : span.end]}
    provenance = span.source.as_json()
    items = []
    for line, indexes in sorted(lines.items()):
        first, last = text.offsets[indexes[0]], text.offsets[indexes[-1]]
        line_text = text.text[max(span.start, first[0]) : min(span.end, last[1])]
        x0, y0, x1, y1 = _union(page.words[i] for i in indexes)
        box = {
            "x": round(100 * x0 / page.width, 4),
            "y": round(100 * y0 / page.height, 4),
            "width": round(100 * (x1 - x0) / page.width, 4),
            "height": round(100 * (y1 - y0) / page.height, 4),
            "rotation": 0,
        }
        common: dict[str, Any] = {
            "id": item_id(chunk_id, line),
            "from_name": from_name,
            "to_name": to_name,
            "original_width": page.image_width,
            "original_height": page.image_height,
            "image_rotation": 0,
            "origin": "prediction",
        }
        if item_index is not None:
            common["item_index"] = item_index
        items.append(
            common
            | {
                "type": "rectanglelabels",
                "value": box | {"rectanglelabels": [span.label]},
                "meta": {"text": [line_text]},
                "score": span.confidence,
                "chunk": chunk,
                "provenance": provenance,
            }
        )
        if transcription is not None:
            items.append(
                common
                | {
                    "from_name": transcription,
                    "type": "textarea",
                    "value": box | {"text": [line_text]},
                }
            )
    return items


def _union(words: Iterable[Word]) -> tuple[float, float, float, float]:
    """The smallest box around the words, in one pass."""
    x0 = y0 = float("inf")
    x1 = y1 = float("-inf")
    for word in words:
        x0, y0 = min(x0, word.x0), min(y0, word.y0)
        x1, y1 = max(x1, word.x1), max(y1, word.y1)
    return x0, y0, x1, y1


def region_spans(
    result: Sequence[dict[str, Any]], pages: Sequence[Page], texts: Sequence[PageText]
) -> dict[int, list[tuple[int, int, str]]]:
    """`(start, end, label)` chunks in each page's text (keyed by page index) from the
    `rectanglelabels` items of a completion: the words whose box centre lies inside a
    region are its words; the regions of one chunk (same `chunk.id`) join again, and each
    run of consecutive words becomes one chunk. Regions that hold no word are skipped."""
    by_index = {page.index: (page, text) for page, text in zip(pages, texts, strict=True)}
    groups: dict[tuple[int, str, str], set[int]] = defaultdict(set)
    for item in result:
        value = item.get("value") or {}
        labels = value.get("rectanglelabels")
        page_index = item.get("item_index") or 0
        if item.get("type") != "rectanglelabels" or not labels or page_index not in by_index:
            continue
        page, _ = by_index[page_index]
        x0, y0 = value["x"] * page.width / 100, value["y"] * page.height / 100
        x1, y1 = x0 + value["width"] * page.width / 100, y0 + value["height"] * page.height / 100
        key = (page_index, (item.get("chunk") or {}).get("id") or str(item.get("id")), labels[0])
        groups[key].update(
            i
            for i, w in enumerate(page.words)
            if x0 <= (w.x0 + w.x1) / 2 <= x1 and y0 <= (w.y0 + w.y1) / 2 <= y1
        )
    spans: dict[int, list[tuple[int, int, str]]] = defaultdict(list)
    for (page_index, _, label), words in groups.items():
        offsets = by_index[page_index][1].offsets
        run: list[int] = []
        for index in sorted(words):
            if run and index != run[-1] + 1:
                spans[page_index].append((offsets[run[0]][0], offsets[run[-1]][1], label))
                run = []
            run.append(index)
        if run:
            spans[page_index].append((offsets[run[0]][0], offsets[run[-1]][1], label))
    return {index: sorted(found) for index, found in sorted(spans.items())}
