"""PDFs and page images -> words with boxes, per page; every hostile input fails with a reason.

A PDF page with a text layer gives its words through PyMuPDF; a page without one (a scan)
is rendered at the configured DPI and read by Tesseract, as are PNG, JPEG and TIFF images.
The kind of a file is decided by its content, never by its name, and a name that says
otherwise is refused. Every limit is checked before the costly step it guards: file size
before reading, page count and pixels per page (PDF page size × DPI, or the image header)
before anything is rendered or decoded, and Tesseract runs under a time limit per page.

PyMuPDF, Pillow and pytesseract are imported where they are used, so code that only names
these types does not load them.
"""

import os
import tempfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

if TYPE_CHECKING:
    from PIL.Image import Image

Kind = Literal["pdf", "png", "jpeg", "tiff"]
KINDS: dict[str, Kind] = {
    ".pdf": "pdf",
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".tif": "tiff",
    ".tiff": "tiff",
}
MAGIC: tuple[tuple[bytes, Kind], ...] = (
    (b"%PDF-", "pdf"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)
NAMES = {"pdf": "a PDF", "png": "a PNG image", "jpeg": "a JPEG image", "tiff": "a TIFF image"}
POINTS_PER_INCH = 72


class DocumentError(ValueError):
    """A document that cannot be read; the message is the reason a user sees."""


@dataclass(frozen=True, slots=True)
class DocumentLimits:
    """Per-document limits; the defaults suit office scans and reports."""

    max_bytes: int = 50 * 1024 * 1024
    max_pages: int = 200
    max_pixels: int = 50_000_000  # per page image (A4 at 600 DPI is 35 million)
    ocr_seconds: float = 30.0
    dpi: int = 200
    languages: str = "eng"
    ocr_threads: int = 1  # OMP_THREAD_LIMIT: one thread per replica lets replicas scale


DEFAULT_LIMITS = DocumentLimits()


class Word(NamedTuple):
    """One word and its box in page units (see `Page`); `line` numbers the page's lines in
    reading order; `confidence` (0..1) is OCR's, None for a text layer. A named tuple, as
    a page makes hundreds and a frozen dataclass takes four times as long to build."""

    text: str
    x0: float
    y0: float
    x1: float
    y1: float
    line: int
    confidence: float | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """One page: its size in the words' units (PDF points, or pixels for images) and the
    pixel size of the page image annotators see (what regions call original_width/height)."""

    index: int
    width: float
    height: float
    image_width: int
    image_height: int
    words: tuple[Word, ...]
    ocr: bool


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    kind: Kind
    pages: int


def sniff_kind(data: bytes, name: str | None = None) -> Kind:
    """The kind of a file from its first bytes; refuses SVG, unknown content and a name
    whose extension says something else (a name without one, such as a content hash,
    leaves it to the content)."""
    if not data:
        raise DocumentError("the file is empty")
    head = data[:1024].lstrip()
    kind = next((k for magic, k in MAGIC if head.startswith(magic)), None)
    suffix = Path(name).suffix.lower() if name else ""
    if kind is None:
        lowered = head.lower()
        if suffix == ".svg" or b"<svg" in lowered or lowered.startswith(b"<?xml"):
            raise DocumentError(
                "SVG images are not accepted (they can reference other files); "
                "convert to PNG or PDF"
            )
        said = f"{name} is not {NAMES[KINDS[suffix]]}" if suffix in KINDS else "the file"
        raise DocumentError(f"{said}: its content is not a PDF, PNG, JPEG or TIFF file")
    if suffix and suffix not in KINDS:
        raise DocumentError(
            f"{name}: only {', '.join(KINDS)} files are accepted (its content is {NAMES[kind]})"
        )
    if suffix and KINDS[suffix] != kind:
        raise DocumentError(f"{name} is not {NAMES[KINDS[suffix]]} (its content is {NAMES[kind]})")
    return kind


def _load(source: bytes | Path, limits: DocumentLimits) -> bytes:
    size = len(source) if isinstance(source, bytes) else Path(source).stat().st_size
    if size > limits.max_bytes:
        raise DocumentError(f"the file has {size:,} bytes; the limit is {limits.max_bytes:,} bytes")
    return source if isinstance(source, bytes) else Path(source).read_bytes()


def _check_pages(count: int, limits: DocumentLimits) -> None:
    if count > limits.max_pages:
        raise DocumentError(f"the document has {count} pages; the limit is {limits.max_pages}")


def _check_pixels(index: int, width: int, height: int, limits: DocumentLimits) -> None:
    if width * height > limits.max_pixels:
        raise DocumentError(
            f"page {index + 1} is {width}×{height} pixels; the limit is "
            f"{limits.max_pixels:,} pixels per page"
        )


@contextmanager
def _mupdf_errors() -> Iterator[None]:
    """MuPDF's errors on a damaged file, as the reason the PDF cannot be read."""
    import pymupdf

    try:
        yield
    except DocumentError:
        raise
    except (RuntimeError, ValueError, pymupdf.mupdf.FzErrorBase) as exc:
        raise DocumentError(f"the PDF is corrupt: {exc}") from None


def _open_pdf(data: bytes, limits: DocumentLimits) -> Any:
    """The PDF, opened and checked (`_check_pdf`); the caller closes it."""
    import pymupdf

    pymupdf.TOOLS.mupdf_display_errors(False)
    if b"%%EOF" not in data[-2048:]:
        raise DocumentError("the PDF is truncated (it has no end-of-file marker)")
    with _mupdf_errors():
        doc = pymupdf.open(stream=data, filetype="pdf")
    try:
        with _mupdf_errors():
            _check_pdf(doc, limits)
    except DocumentError:
        doc.close()
        raise
    return doc


def _check_pdf(doc: Any, limits: DocumentLimits) -> None:
    """Not encrypted, within the page limit, and each page (at the render DPI) and each
    image on it within the pixel limit."""
    if doc.needs_pass:
        raise DocumentError("the PDF is encrypted; upload it without a password")
    if doc.page_count == 0:
        raise DocumentError("the PDF is corrupt: it has no readable pages")
    _check_pages(doc.page_count, limits)
    for index, page in enumerate(doc):
        width, height = _pixels(page.rect, limits.dpi)
        _check_pixels(index, width, height, limits)
        for image in page.get_images():  # drawing the page decodes them whole
            if image[2] * image[3] > limits.max_pixels:
                raise DocumentError(
                    f"page {index + 1} holds an image of {image[2]}×{image[3]} pixels; "
                    f"the limit is {limits.max_pixels:,} pixels"
                )


def _pixels(rect: Any, dpi: int) -> tuple[int, int]:
    """The size MuPDF renders the page at: the scaled page rounded outwards (A4 at 100
    DPI is 827 x 1170 pixels, not 826 x 1169), so `original_width` is the drawn image's."""
    import pymupdf

    scale = dpi / POINTS_PER_INCH
    box = (rect * pymupdf.Matrix(scale, scale)).irect
    return box.width, box.height


def _open_image(data: bytes, kind: Kind, limits: DocumentLimits) -> "Image":
    """The image, header read but not decoded, within the page and pixel limits."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(BytesIO(data), formats=[kind.upper()])
    except Image.DecompressionBombError as exc:
        raise DocumentError(
            f"the image claims too many pixels to decode safely (a decompression bomb?): {exc}"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DocumentError(f"the image is corrupt: {exc}") from None
    frames = getattr(image, "n_frames", 1)
    _check_pages(frames, limits)
    _check_pixels(0, image.width, image.height, limits)
    return image


def _frames(
    image: "Image", limits: DocumentLimits, only: Collection[int] | None = None
) -> Iterator[tuple[int, "Image"]]:
    """Each frame (TIFF pages), or those in `only`, with its index: decoded as RGB and
    turned upright by its EXIF orientation, after its own pixel check."""
    from PIL import ImageOps

    for index in range(getattr(image, "n_frames", 1)):
        if only is not None and index not in only:
            continue
        image.seek(index)
        _check_pixels(index, image.width, image.height, limits)
        try:
            frame = ImageOps.exif_transpose(image).convert("RGB")  # as a browser shows it
        except (OSError, SyntaxError, ValueError) as exc:
            raise DocumentError(f"the image is corrupt (page {index + 1}): {exc}") from None
        yield index, frame


class Document:
    """An opened document that passed every check `inspect_document` makes: its kind and
    page count are known, and its pages are read or drawn without opening it again, so a
    task that counts its pages before reading them, or draws every page, opens each file
    once. Made by `open_document`, which closes it."""

    def __init__(self, data: bytes, name: str | None, limits: DocumentLimits) -> None:
        self.kind = sniff_kind(data, name)
        self.limits = limits
        self._pdf: Any = None
        self._image: Image | None = None
        if self.kind == "pdf":
            self._pdf = _open_pdf(data, limits)
            self.pages: int = self._pdf.page_count
            return
        self._image = _open_image(data, self.kind, limits)
        self.pages = getattr(self._image, "n_frames", 1)
        for index in range(self.pages):
            self._image.seek(index)
            _check_pixels(index, self._image.width, self._image.height, limits)

    def read(self, only: Collection[int] | None = None) -> list[Page]:
        """The words of every page, or of the pages in `only` (indexes from 0; those the
        document lacks are left out), from the PDF text layer or by OCR."""
        if self._image is not None:
            return [
                _ocr_page(index, frame, frame.width, frame.height, self.limits)
                for index, frame in _frames(self._image, self.limits, only)
            ]
        indexes = range(self.pages) if only is None else sorted(only)
        with _mupdf_errors():
            return [_pdf_page(i, self._pdf[i], self.limits) for i in indexes if 0 <= i < self.pages]

    def image(self, index: int) -> "Image":
        """Page `index` as annotators see it: a PDF page rendered at the DPI, or the image
        frame."""
        if not 0 <= index < self.pages:
            raise DocumentError(
                f"the document has {self.pages} page(s); there is no page {index + 1}"
            )
        if self._image is not None:
            return next(frame for _, frame in _frames(self._image, self.limits, {index}))
        with _mupdf_errors():
            return _render(self._pdf[index], self.limits.dpi)

    def close(self) -> None:
        if self._pdf is not None:
            self._pdf.close()
        if self._image is not None:
            self._image.close()


@contextmanager
def open_document(
    source: bytes | Path, name: str | None = None, limits: DocumentLimits = DEFAULT_LIMITS
) -> Iterator[Document]:
    """The document, opened and checked (`DocumentError` with the reason when it breaks a
    limit or cannot be read), closed at the end of the block."""
    document = Document(_load(source, limits), name, limits)
    try:
        yield document
    finally:
        document.close()


def inspect_document(
    source: bytes | Path, name: str | None = None, limits: DocumentLimits = DEFAULT_LIMITS
) -> DocumentInfo:
    """Everything that can be checked without OCR or decoding pixels: size, kind, encryption,
    corruption, truncation, pages and pixels per page. For refusing an upload up front."""
    with open_document(source, name, limits) as document:
        return DocumentInfo(document.kind, document.pages)


def read_document(
    source: bytes | Path,
    name: str | None = None,
    limits: DocumentLimits = DEFAULT_LIMITS,
    only: Collection[int] | None = None,
) -> list[Page]:
    """The words of every page, or of the pages in `only` (`Document.read`); DocumentError
    when the document cannot be read or breaks a limit."""
    with open_document(source, name, limits) as document:
        return document.read(only)


def _pdf_page(index: int, page: Any, limits: DocumentLimits) -> Page:
    import pymupdf

    width, height = _pixels(page.rect, limits.dpi)
    raw = page.get_text("words")  # MuPDF's order: block by block, line by line
    if not any(w[4].strip() for w in raw):
        image = _render(page, limits.dpi, gray=True)
        return _ocr_page(index, image, page.rect.width, page.rect.height, limits)
    # words come unrotated; a page with /Rotate is seen (and drawn) turned
    turn = page.rotation_matrix if page.rotation else None
    lines: dict[tuple[int, int], int] = {}
    words = []
    for *box, text, block, line, _ in raw:
        x0, y0, x1, y1 = box if turn is None else pymupdf.Rect(box) * turn
        number = lines.setdefault((block, line), len(lines))
        words.append(Word(text, x0, y0, x1, y1, number))
    return Page(index, page.rect.width, page.rect.height, width, height, tuple(words), False)


def _render(page: Any, dpi: int, gray: bool = False) -> "Image":
    import pymupdf
    from PIL import Image

    pixmap = page.get_pixmap(dpi=dpi, colorspace=pymupdf.csGRAY if gray else pymupdf.csRGB)
    mode = "L" if gray else "RGB"
    return Image.frombytes(mode, (pixmap.width, pixmap.height), pixmap.samples)


def _ocr_page(
    index: int, image: "Image", width: float, height: float, limits: DocumentLimits
) -> Page:
    """Tesseract's words on a page image, boxes scaled to page units (`width` × `height`).
    The image goes to Tesseract as an uncompressed BMP: a PNG (pytesseract's own choice)
    costs a sixth of the OCR time to write."""
    import pytesseract

    os.environ["OMP_THREAD_LIMIT"] = str(limits.ocr_threads)
    dpi = round(image.info.get("dpi", (limits.dpi,))[0]) or limits.dpi
    with tempfile.NamedTemporaryFile(suffix=".bmp") as handoff:
        image.save(handoff, format="BMP")
        handoff.flush()
        try:
            data = pytesseract.image_to_data(
                handoff.name,
                lang=limits.languages,
                config=f"--dpi {dpi}",
                timeout=limits.ocr_seconds,
                output_type=pytesseract.Output.DICT,
            )
        except RuntimeError as exc:  # pytesseract's timeout; TesseractError is one too
            if "timeout" in str(exc):
                raise DocumentError(
                    f"OCR of page {index + 1} took longer than {limits.ocr_seconds:g} s"
                ) from None
            raise DocumentError(f"OCR of page {index + 1} failed: {exc}") from None
    sx, sy = width / image.width, height / image.height
    lines: dict[tuple[int, int, int], int] = {}
    words = []
    for i, text in enumerate(data["text"]):
        conf = float(data["conf"][i])
        if not text.strip() or conf < 0:
            continue
        key = (data["block_num"][i], data["par_num"][i], data["line_num"][i])
        left, top = data["left"][i], data["top"][i]
        right, bottom = left + data["width"][i], top + data["height"][i]
        words.append(
            Word(
                text.strip(),
                left * sx,
                top * sy,
                right * sx,
                bottom * sy,
                lines.setdefault(key, len(lines)),
                conf / 100,
            )
        )
    return Page(index, width, height, image.width, image.height, tuple(words), True)


def page_image(
    source: bytes | Path,
    index: int,
    name: str | None = None,
    limits: DocumentLimits = DEFAULT_LIMITS,
) -> "Image":
    """The page as annotators see it (`Document.image`)."""
    with open_document(source, name, limits) as document:
        return document.image(index)
