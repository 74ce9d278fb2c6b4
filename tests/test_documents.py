"""Documents -> words -> page text -> one box per chunk per line, on generated PDFs and scans.

The documents are made here: a two-page invoice written with PyMuPDF (a text layer), the
same pages rendered to PNG, and a PDF of those images (a scan, read by Tesseract). The
true position of each entity is where PyMuPDF's own search finds its text on the page.
"""

import struct
import time
import zlib
from io import BytesIO
from pathlib import Path

import pymupdf
import pytest
from PIL import Image, ImageOps

from preannotate.annotators.documents import (
    DocumentError,
    DocumentLimits,
    inspect_document,
    open_document,
    page_image,
    read_document,
)
from preannotate.annotators.page_text import PageText, page_text
from preannotate.annotators.regions import region_spans, span_regions
from preannotate.annotators.render import label_colour, render_page
from preannotate.annotators.spans import Source, Span
from preannotate.annotators.task_pages import DocumentPage, document_pages
from preannotate.configs.labeling import ObjectTag

LINES = (
    [
        "Invoice from Acme Widgets Limited",
        "Billed to John Smith of New",
        "York City on 3 March 2024",
    ],
    ["Ship the parts to Mary Jones at", "the Paris office before Friday"],
)
SOURCE = Source("rule", "test", "1")
Box = tuple[float, float, float, float]


def invoice() -> pymupdf.Document:
    doc = pymupdf.open()
    for lines in LINES:
        page = doc.new_page()
        for number, line in enumerate(lines):
            page.insert_text((72, 100 + 30 * number), line, fontsize=16)
    return doc


def true_boxes(index: int, text: str, document: pymupdf.Document | None = None) -> list[Box]:
    """Where `text` is on page `index` of the document (the invoice unless given), one box
    per line, in percent."""
    page = (document or invoice())[index]
    width, height = page.rect.width, page.rect.height
    return [
        (100 * r.x0 / width, 100 * r.y0 / height, 100 * r.x1 / width, 100 * r.y1 / height)
        for r in page.search_for(text)
    ]


def iou(a: Box, b: Box) -> float:
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area


def region_box(item: dict) -> Box:
    v = item["value"]
    return (v["x"], v["y"], v["x"] + v["width"], v["y"] + v["height"])


def chunk(text: PageText, words: str, label: str = "ORG") -> Span:
    """The span of `words` in the page text (lines joined by a newline)."""
    start = text.text.index(words)
    return Span(start, start + len(words), label, SOURCE, 0.9)


def rectangles(items: list[dict]) -> list[dict]:
    return [i for i in items if i["type"] == "rectanglelabels"]


@pytest.fixture(scope="module")
def digital() -> bytes:
    return invoice().tobytes()


@pytest.fixture(scope="module")
def scanned_png() -> bytes:
    return invoice()[0].get_pixmap(dpi=200).tobytes("png")


@pytest.fixture(scope="module")
def scanned_pdf() -> bytes:
    """The invoice as a scan: each page an image, no text layer."""
    scan = pymupdf.open()
    for page in invoice():
        image = scan.new_page(width=page.rect.width, height=page.rect.height)
        image.insert_image(image.rect, stream=page.get_pixmap(dpi=200).tobytes("png"))
    return scan.tobytes()


@pytest.fixture(scope="module")
def scanned_pages(scanned_pdf: bytes) -> list:
    return read_document(scanned_pdf, "scan.pdf")


def test_text_layer_gives_words_with_boxes_and_lines(digital: bytes) -> None:
    pages = read_document(digital, "invoice.pdf")
    assert [p.ocr for p in pages] == [False, False]
    assert [page_text(p).text for p in pages] == ["\n".join(lines) for lines in LINES]
    acme = next(w for w in pages[0].words if w.text == "Acme")
    width, height = pages[0].width, pages[0].height
    box = (
        100 * acme.x0 / width,
        100 * acme.y0 / height,
        100 * acme.x1 / width,
        100 * acme.y1 / height,
    )
    assert iou(box, true_boxes(0, "Acme")[0]) >= 0.5
    assert (pages[0].image_width, pages[0].image_height) == (1653, 2339)  # A4 at 200 DPI


def test_a_multi_word_chunk_is_one_box_and_a_two_line_chunk_two(digital: bytes) -> None:
    page = read_document(digital, "invoice.pdf")[0]
    text = page_text(page)
    (acme,) = rectangles(span_regions(chunk(text, "Acme Widgets Limited"), page, text, "l", "i"))
    assert acme["value"]["rectanglelabels"] == ["ORG"]
    assert acme["meta"]["text"] == ["Acme Widgets Limited"]
    assert (acme["original_width"], acme["original_height"]) == (1653, 2339)
    assert iou(region_box(acme), true_boxes(0, "Acme Widgets Limited")[0]) >= 0.5

    items = span_regions(chunk(text, "New\nYork City", "GPE"), page, text, "l", "i", None, "t")
    new, york = rectangles(items)
    assert [new["meta"]["text"], york["meta"]["text"]] == [["New"], ["York City"]]
    assert iou(region_box(new), true_boxes(0, "New")[0]) >= 0.5
    assert iou(region_box(york), true_boxes(0, "York City")[0]) >= 0.5
    assert new["chunk"] == york["chunk"] and new["id"] != york["id"]
    transcriptions = [i for i in items if i["type"] == "textarea"]
    assert [(t["id"], t["value"]["text"]) for t in transcriptions] == [
        (new["id"], ["New"]),
        (york["id"], ["York City"]),
    ]


def test_regions_of_the_second_page_carry_its_index_and_map_back(digital: bytes) -> None:
    pages = read_document(digital, "invoice.pdf")
    texts = [page_text(p) for p in pages]
    mary = chunk(texts[1], "Mary Jones", "PERSON")
    city = chunk(texts[0], "New\nYork City", "GPE")
    items = span_regions(mary, pages[1], texts[1], "l", "i", item_index=1)
    items += span_regions(city, pages[0], texts[0], "l", "i", item_index=0)
    assert [i["item_index"] for i in items] == [1, 0, 0]
    assert iou(region_box(items[0]), true_boxes(1, "Mary Jones")[0]) >= 0.5
    assert region_spans(items, pages, texts) == {
        0: [(city.start, city.end, "GPE")],
        1: [(mary.start, mary.end, "PERSON")],
    }
    x0, y0, x1, y1 = true_boxes(0, "John Smith")[0]
    drawn = {  # a box an annotator drew around "John Smith", a little loose, with no chunk id
        "id": "x",
        "type": "rectanglelabels",
        "value": {
            "x": x0 - 0.5,
            "y": y0 - 0.5,
            "width": x1 - x0 + 1,
            "height": y1 - y0 + 1,
            "rectanglelabels": ["PERSON"],
        },
    }
    john = chunk(texts[0], "John Smith")
    assert region_spans([drawn], pages, texts) == {0: [(john.start, john.end, "PERSON")]}


def test_a_turned_page_has_its_boxes_where_the_words_are_seen() -> None:
    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_text((72, 100), "Hello John", fontsize=16)
    page.set_rotation(90)
    data = doc.tobytes()
    (read,) = read_document(data, "turned.pdf")
    text = page_text(read)
    (item,) = span_regions(chunk(text, "Hello John"), read, text, "l", "i")
    image = page_image(data, 0)
    ink = ImageOps.invert(image.convert("L")).getbbox()  # where the text is drawn
    assert ink is not None
    size = image.size * 2
    seen = tuple(100 * c / s for c, s in zip(ink, size, strict=True))
    assert iou(region_box(item), seen) >= 0.5


def test_rendered_page_outlines_each_region_in_its_label_colour(digital: bytes) -> None:
    page = read_document(digital, "invoice.pdf")[0]
    text = page_text(page)
    (item,) = span_regions(chunk(text, "Acme Widgets Limited"), page, text, "l", "i")
    png = Image.open(BytesIO(render_page(page_image(digital, 0), [item])))
    assert png.format == "PNG" and png.size == (1653, 2339)
    x0, y0, x1, y1 = (c / 100 * s for c, s in zip(region_box(item), (1653, 2339) * 2, strict=True))
    colour = Image.new("RGB", (1, 1), label_colour("ORG")).getpixel((0, 0))
    assert png.convert("RGB").getpixel((round(x0), round((y0 + y1) / 2))) == colour


def test_scanned_pdf_is_read_by_ocr_and_chunks_land_on_the_words(scanned_pages: list) -> None:
    texts = [page_text(p) for p in scanned_pages]
    assert [p.ocr for p in scanned_pages] == [True, True]
    assert [t.text for t in texts] == ["\n".join(lines) for lines in LINES]
    page = scanned_pages[0]
    (acme,) = rectangles(
        span_regions(chunk(texts[0], "Acme Widgets Limited"), page, texts[0], "l", "i")
    )
    assert iou(region_box(acme), true_boxes(0, "Acme Widgets Limited")[0]) >= 0.5
    new, york = rectangles(
        span_regions(chunk(texts[0], "New\nYork City"), page, texts[0], "l", "i")
    )
    assert iou(region_box(new), true_boxes(0, "New")[0]) >= 0.5
    assert iou(region_box(york), true_boxes(0, "York City")[0]) >= 0.5
    (mary,) = span_regions(chunk(texts[1], "Mary Jones"), scanned_pages[1], texts[1], "l", "i", 1)
    assert mary["item_index"] == 1
    assert iou(region_box(mary), true_boxes(1, "Mary Jones")[0]) >= 0.5
    assert all(0.5 < w.confidence <= 1 for w in page.words)


def test_page_image_is_read_by_ocr_with_boxes_in_its_pixels(scanned_png: bytes) -> None:
    (page,) = read_document(scanned_png, "invoice-page.png")
    assert page.ocr and (page.width, page.height) == (1653, 2339)
    text = page_text(page)
    (acme,) = rectangles(span_regions(chunk(text, "Acme Widgets Limited"), page, text, "l", "i"))
    assert iou(region_box(acme), true_boxes(0, "Acme Widgets Limited")[0]) >= 0.5


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` × `height` pixels: a decompression bomb's shape."""

    def part(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + part(b"IHDR", header) + part(b"IDAT", idat) + part(b"IEND", b"")


def many_pages(count: int) -> bytes:
    doc = pymupdf.open()
    for _ in range(count):
        doc.new_page()
    return doc.tobytes()


def huge_page() -> bytes:
    doc = pymupdf.open()
    doc.new_page(width=14_400, height=14_400)  # 200 × 200 inches
    return doc.tobytes()


def page_tree_cycle() -> bytes:
    """A PDF whose page tree lists itself as its own kid."""
    doc = pymupdf.open()
    doc.new_page()
    pages = int(doc.xref_get_key(doc.pdf_catalog(), "Pages")[1].split()[0])
    doc.xref_set_key(pages, "Kids", f"[{pages} 0 R]")
    return doc.tobytes()


def pdf_image_bomb() -> bytes:
    """A page with an image whose dictionary claims 60,000 × 60,000 pixels."""
    doc = pymupdf.open()
    page = doc.new_page()
    small = BytesIO()
    Image.new("RGB", (10, 10), "red").save(small, format="PNG")
    page.insert_image(pymupdf.Rect(0, 0, 100, 100), stream=small.getvalue())
    xref = page.get_images()[0][0]
    doc.xref_set_key(xref, "Width", "60000")
    doc.xref_set_key(xref, "Height", "60000")
    return doc.tobytes()


def hostile(digital: bytes) -> dict[str, tuple[bytes, str, str]]:
    """Case -> (content, file name, what the error must say)."""
    encrypted = invoice().tobytes(
        encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="secret", owner_pw="owner"
    )
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><image href="file:///etc/passwd"/></svg>'
    return {
        "encrypted": (encrypted, "a.pdf", "encrypted"),
        "corrupt": (b"%PDF-1.7\n" + bytes(range(256)) * 8 + b"\n%%EOF\n", "a.pdf", "corrupt"),
        "page tree cycle": (page_tree_cycle(), "a.pdf", "corrupt: .*cycle in page tree"),
        "truncated": (digital[: len(digital) // 2], "a.pdf", "truncated"),
        "zero-byte": (b"", "a.pdf", "empty"),
        "text named png": (b"just some words\n", "photo.png", "photo.png is not a PNG image"),
        "pdf named png": (digital, "scan.png", "scan.png is not a PNG image (its content is a PDF"),
        "svg": (svg, "logo.svg", "SVG"),
        "image bomb": (png_header(60_000, 60_000), "bomb.png", "too many pixels"),
        "page bomb": (huge_page(), "big.pdf", "40000×40000 pixels"),
        "image in a PDF bomb": (pdf_image_bomb(), "a.pdf", "image of 60000×60000 pixels"),
        "too many pages": (many_pages(201), "long.pdf", "201 pages; the limit is 200"),
    }


CASES = list(hostile(invoice().tobytes()))


@pytest.mark.parametrize("case", CASES)
def test_each_hostile_document_fails_quickly_with_its_own_reason(case: str, digital: bytes) -> None:
    data, name, reason = hostile(digital)[case]
    for check in (inspect_document, read_document):
        start = time.perf_counter()
        with pytest.raises(DocumentError, match=reason.replace("(", r"\(")):
            check(data, name)
        assert time.perf_counter() - start < 5  # quick even on a busy machine


def test_an_opened_document_counts_reads_and_draws_its_pages(
    digital: bytes, scanned_png: bytes
) -> None:
    """One open serves the page count, the words of a page and its drawing, and the drawing
    is as large as the read page says (what regions call original_width/height)."""
    with open_document(digital, "invoice.pdf") as document:
        assert (document.kind, document.pages) == ("pdf", 2)
        (second,) = document.read({1, 5})  # a page the document lacks is left out
        assert " ".join(w.text for w in second.words).startswith("Ship the parts to Mary")
        assert document.image(1).size == (second.image_width, second.image_height)
        with pytest.raises(DocumentError, match=r"has 2 page\(s\); there is no page 3"):
            document.image(2)
    with open_document(scanned_png, "page.png") as image:
        assert (image.kind, image.pages) == ("png", 1)
        (page,) = image.read()
        assert page.ocr and image.image(0).size == (page.image_width, page.image_height)


def test_file_size_and_ocr_time_limits(digital: bytes, scanned_png: bytes, tmp_path: Path) -> None:
    path = tmp_path / "invoice.pdf"
    path.write_bytes(digital)
    with pytest.raises(DocumentError, match="the limit is 1,000 bytes"):
        read_document(path, path.name, DocumentLimits(max_bytes=1000))
    assert inspect_document(path, path.name).pages == 2
    assert inspect_document(digital, "3f2a9c").kind == "pdf"  # no extension: content decides
    with pytest.raises(DocumentError, match="notes.txt: only .pdf, .png"):
        inspect_document(digital, "notes.txt")
    start = time.perf_counter()
    with pytest.raises(DocumentError, match="OCR of page 1 took longer than 0.05 s"):
        read_document(scanned_png, "page.png", DocumentLimits(ocr_seconds=0.05))
    assert time.perf_counter() - start < 5  # quick even on a busy machine


def test_a_task_names_pages_that_are_checked_before_and_only_those_read(
    digital: bytes, tmp_path: Path
) -> None:
    """A page the document lacks is refused before any page is read (here the OCR limit
    would otherwise answer first), and a task that names one page of a document has only
    that page read: page 1, a scan, would break the OCR limit; page 2 has a text layer."""
    mixed = pymupdf.open()
    first = invoice()[0]
    scan = mixed.new_page(width=first.rect.width, height=first.rect.height)
    scan.insert_image(scan.rect, stream=first.get_pixmap(dpi=200).tobytes("png"))
    mixed.insert_pdf(pymupdf.open("pdf", digital), from_page=1, to_page=1)
    (tmp_path / "scans").mkdir()
    (tmp_path / "scans" / "mixed.pdf").write_bytes(mixed.tobytes())
    pages = ObjectTag(name="image", kind="image", value="pages", value_list=True)
    quick_ocr = DocumentLimits(ocr_seconds=0.05)

    def read(*refs: str) -> list[DocumentPage]:
        return document_pages(pages, {"pages": list(refs)}, tmp_path, quick_ocr)

    with pytest.raises(
        ValueError, match="'local://scans/mixed.pdf#page=3' names page 3; the document has 2"
    ):
        read("local://scans/mixed.pdf#page=2", "local://scans/mixed.pdf#page=3")
    (second,) = read("local://scans/mixed.pdf#page=2")
    assert (second.page.index, second.item_index, second.page.ocr) == (1, 0, False)
    assert " ".join(w.text for w in second.page.words).startswith("Ship the parts to Mary")
    with pytest.raises(DocumentError, match="OCR of page 1 took longer than 0.05 s"):
        read("local://scans/mixed.pdf#page=1")
