"""Visual pre-annotation end to end: PDFs and images uploaded through the API become tasks,
a real server pre-annotates them with a spaCy model and rules, and the boxes land on the
words; bad files and references are refused or fail alone; roles hold; the visual trainer
learns a `visual_ner` model from boxes that then predicts.

The documents are generated (`tests/test_documents.py`): a two-page invoice with a text
layer, and its first page rendered to PNG (a scan, read by Tesseract).
"""

import json
import re
import uuid
from pathlib import Path

import httpx
import pymupdf
import pytest
from typer.testing import CliRunner

from preannotate.client.api import Client
from preannotate.client.cli import app
from preannotate.configs.files import FileReferenceError, resolve
from preannotate.hub.catalog import Hub
from tests.conftest import RayCluster, servers_deleted_after
from tests.test_documents import hostile, invoice, iou, region_box, true_boxes
from tests.test_jobs import wait_job
from tests.test_pipeline import add_classifier

CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">
    <Label value="PERSON" model="ner_general_en_sm"/>
    <Label value="COMPANY"/>
    <Label value="CITY"/>
  </RectangleLabels>
</View>"""
RULES = [
    {"name": "company", "label": "COMPANY", "kind": "regex", "regex": r"Acme Widgets Limited"},
    {"name": "city", "label": "CITY", "kind": "regex", "regex": r"New\s+York\s+City"},
]
runner = CliRunner()
VENDORS = ["Acme Supplies", "Globex Trading", "Initech Systems", "Umbrella Foods"]


def create_project(client: httpx.Client, xml: str = CONFIG, rules: list | None = None) -> int:
    body = {
        "name": f"visual-{uuid.uuid4().hex[:8]}",
        "labeling_config": xml,
        "rules": RULES if rules is None else rules,
        "resources": {"num_cpus": 0.5},
    }
    response = client.post("/projects", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def upload(client: httpx.Client, project: int, *files: tuple[str, bytes]) -> httpx.Response:
    return client.post(f"/projects/{project}/files", files=[("files", f) for f in files])


def preannotate(client: httpx.Client, project: int) -> dict:
    started = client.post(f"/projects/{project}/preannotate", json={"all": True})
    assert started.status_code == 202, started.text
    return wait_job(client, started.json()["id"])


def latest(client: httpx.Client, task: int) -> list[dict]:
    return client.get(f"/tasks/{task}/predictions").json()[-1]["result"]


def boxes(result: list[dict], label: str, page: int | None = None) -> list[dict]:
    return [
        r
        for r in result
        if r["value"]["rectanglelabels"] == [label] and r.get("item_index") == page
    ]


@pytest.fixture(scope="module")
def annotated(ray_cluster: RayCluster) -> dict:
    """One project with the invoice PDF and its scan uploaded and pre-annotated."""
    headers = {"Authorization": f"Bearer {ray_cluster.admin_token}"}
    with (
        httpx.Client(base_url=ray_cluster.url, timeout=120, headers=headers) as client,
        servers_deleted_after(client),
    ):
        project = create_project(client)
        scan = invoice()[0].get_pixmap(dpi=200).tobytes("png")
        uploaded = upload(client, project, ("invoice.pdf", invoice().tobytes()), ("scan.png", scan))
        assert uploaded.status_code == 201, uploaded.text
        files = uploaded.json()["files"]
        job = preannotate(client, project)
        assert job["state"] == "succeeded" and job["failed"] == 0, job["errors"]
        results = {f["name"]: latest(client, f["task_id"]) for f in files}
        yield {"project": project, "files": files, "job": job, "results": results}


def test_the_python_client_lists_a_projects_documents(
    ray_cluster: RayCluster, annotated: dict
) -> None:
    with Client(ray_cluster.url, ray_cluster.admin_token) as client:
        listed = client.files(annotated["project"])
    assert [(f["name"], f["task_id"], f["pages"]) for f in listed] == [
        (f["name"], f["task_id"], f["pages"]) for f in annotated["files"]
    ]


def test_uploads_become_tasks_and_boxes_land_on_the_words(annotated: dict) -> None:
    pdf, png = annotated["files"]
    assert (pdf["kind"], pdf["pages"], png["kind"], png["pages"]) == ("pdf", 2, "png", 1)

    for name, first_page in (("invoice.pdf", 0), ("scan.png", None)):
        result = annotated["results"][name]
        [company] = boxes(result, "COMPANY", first_page)  # three words, one box
        assert iou(region_box(company), true_boxes(0, "Acme Widgets Limited")[0]) >= 0.5
        assert company["meta"]["text"] == ["Acme Widgets Limited"]
        city = boxes(result, "CITY", first_page)  # one chunk over two lines: a box per line
        assert [c["meta"]["text"] for c in city] == [["New"], ["York City"]]
        assert len({c["chunk"]["id"] for c in city}) == 1
        for box, truth in zip(city, true_boxes(0, "New") + true_boxes(0, "York City"), strict=True):
            assert iou(region_box(box), truth) >= 0.5
        [john] = [b for b in boxes(result, "PERSON", first_page) if "John" in b["meta"]["text"][0]]
        assert iou(region_box(john), true_boxes(0, "John Smith")[0]) >= 0.5
        assert john["provenance"]["name"] == "ner_general_en_sm"

    result = annotated["results"]["invoice.pdf"]  # the second page's entity is on page 1
    [mary] = boxes(result, "PERSON", 1)
    assert iou(region_box(mary), true_boxes(1, "Mary Jones")[0]) >= 0.5
    assert not [r for r in result if r.get("item_index") == 0 and "Mary" in r["meta"]["text"][0]]


def test_exports_and_the_rendered_page_carry_the_regions(
    api: httpx.Client, annotated: dict
) -> None:
    project, task = annotated["project"], annotated["files"][0]["task_id"]
    for fmt in ("label-studio", "generative-ai-lab"):
        exported = api.get(f"/projects/{project}/export", params={"format": fmt}).json()
        [item] = [t for t in exported if t["id"] == task]
        assert item["predictions"][-1]["result"] == annotated["results"]["invoice.pdf"]
        assert item["data"]["image"] == f"file://{annotated['files'][0]['sha256']}"
    page = api.get(f"/projects/{project}/tasks/{task}/render", params={"page": 2})
    assert page.status_code == 200 and page.headers["content-type"] == "image/png"
    assert pymupdf.Pixmap(page.content).width == 1653  # A4 at 200 DPI
    missing = api.get(f"/projects/{project}/tasks/{task}/render", params={"page": 3})
    assert missing.status_code == 400 and "no page 3" in missing.json()["detail"]


def test_hostile_uploads_are_refused_and_bad_references_fail_alone(
    api: httpx.Client, annotated: dict
) -> None:
    project = create_project(api)
    for case, (content, name, reason) in hostile(invoice().tobytes()).items():
        refused = upload(api, project, ("fine.pdf", invoice().tobytes()), (name, content))
        assert refused.status_code == 400, case
        detail = refused.json()["detail"]
        assert detail.startswith(f"{name}: "), case
        assert re.search(reason.replace("(", r"\("), detail), case
    assert api.get(f"/projects/{project}/tasks").json()["tasks"] == []  # all or nothing

    references = [
        "local://../../etc/passwd",
        "local:///etc/passwd",
        "file:///etc/passwd",
        "http://127.0.0.1:1/x.pdf",
        f"file://{'0' * 64}",
    ]
    rows = [{"data": {"image": ref}} for ref in references]
    body = "\n".join(json.dumps(r) for r in rows).encode()
    assert api.post(f"/projects/{project}/tasks?format=jsonl", content=body).status_code == 201
    assert upload(api, project, ("good.pdf", invoice().tobytes())).status_code == 201
    job = preannotate(api, project)
    assert (job["state"], job["done"], job["failed"]) == ("succeeded", 1, len(references))
    reasons = " ".join(e["error"] for e in job["errors"])
    assert "must be a relative path inside PREANNOTATE_FILES_ROOT" in reasons
    assert "the server opens nothing else" in reasons and "is not there" in reasons
    assert "PREANNOTATE_FILES_DIR names a folder every node mounts" in reasons
    still = preannotate(api, annotated["project"])  # the cluster keeps serving
    assert still["state"] == "succeeded" and still["failed"] == 0


def test_the_same_bytes_uploaded_again_answer_with_the_task_they_are(api: httpx.Client) -> None:
    project, other = create_project(api), create_project(api)
    pdf = invoice().tobytes()
    made = upload(api, project, ("a.pdf", pdf), ("copy.pdf", pdf))
    first = made.json()["files"]
    repeated = upload(api, project, ("b.pdf", pdf))
    [again] = repeated.json()["files"]
    [elsewhere] = upload(api, other, ("a.pdf", pdf)).json()["files"]

    assert (made.status_code, repeated.status_code) == (201, 200)  # 200: nothing was made

    assert [f["duplicate"] for f in first] == [False, True]
    assert first[1] == first[0] | {"duplicate": True}
    assert again == first[1]  # the task, under the name it was first uploaded as
    assert [t["id"] for t in api.get(f"/projects/{project}/tasks").json()["tasks"]] == [
        first[0]["task_id"]
    ]
    assert not elsewhere["duplicate"] and elsewhere["task_id"] != first[0]["task_id"]
    listed = api.get(f"/projects/{project}/files").json()["files"]
    assert [f["id"] for f in listed] == [first[0]["id"]]


def test_files_import_and_offline_render_from_the_cli(
    ray_cluster: RayCluster, annotated: dict, tmp_path: Path
) -> None:
    pdf = tmp_path / "invoice.pdf"
    pdf.write_bytes(invoice().tobytes())
    login = ["--url", ray_cluster.url, "--token", ray_cluster.admin_token]
    project = str(annotated["project"])
    imported = runner.invoke(app, ["files", "import", project, str(pdf), *login])
    assert imported.exit_code == 0, imported.output
    assert f"imported 1 files (2 pages) into project {project}" in imported.stdout
    task = int(imported.stdout.rsplit("as tasks ", 1)[1].split("..")[0])
    again = runner.invoke(app, ["files", "import", project, str(pdf), *login])
    assert again.exit_code == 0, again.output
    assert f"{pdf} was already uploaded: task {task} of project {project}" in again.stdout
    assert "imported" not in again.stdout
    missing = runner.invoke(app, ["files", "import", project, str(tmp_path / "no.pdf"), *login])
    assert missing.exit_code == 2 and "error: no such file" in missing.output

    config = tmp_path / "project.json"
    config.write_text(json.dumps({"name": "v", "labeling_config": CONFIG, "rules": RULES}))
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(json.dumps({"id": 7, "data": {"image": "local://invoice.pdf"}}))
    options = ["--config", str(config), "--tasks", str(tasks), "--out", str(tmp_path / "o")]
    drawn = runner.invoke(app, ["annotate", *options, "--render", str(tmp_path / "png")])
    assert drawn.exit_code == 0, drawn.output
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == [
        "task-7-page-1.png",
        "task-7-page-2.png",
    ]
    [line] = (tmp_path / "o").read_text().splitlines()
    assert boxes(json.loads(line)["result"], "COMPANY", 0)


def test_references_stay_inside_the_configured_root(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "secret.pdf"
    (root / "scans").mkdir(parents=True)
    outside.write_bytes(b"%PDF")
    (root / "scans" / "a.pdf").write_bytes(b"%PDF")
    (root / "scans" / "link.pdf").symlink_to(outside)
    found = resolve("local://scans/a.pdf#page=2", root)
    assert (found.path, found.page) == ((root / "scans" / "a.pdf").resolve(), 1)
    for bad in ("local://scans/link.pdf", "local://scans/../../secret.pdf", "local:///etc/x"):
        with pytest.raises(FileReferenceError, match="PREANNOTATE_FILES_ROOT"):
            resolve(bad, root)


def test_ordinary_users_cannot_see_or_upload_to_each_others_projects(
    api: httpx.Client, annotated: dict
) -> None:
    clients = []
    for name in ("vis-ann", "vis-bob"):
        user = api.post("/users", json={"name": f"{name}-{uuid.uuid4().hex[:6]}"}).json()
        headers = {"Authorization": f"Bearer {user['token']}"}
        clients.append(httpx.Client(base_url=str(api.base_url), headers=headers, timeout=60))
    ann, bob = clients
    try:
        mine = create_project(ann)
        assert upload(ann, mine, ("a.pdf", invoice().tobytes())).status_code == 201
        task = ann.get(f"/projects/{mine}/files").json()["files"][0]["task_id"]
        assert upload(bob, mine, ("b.pdf", invoice().tobytes())).status_code == 403
        assert bob.get(f"/projects/{mine}/files").status_code == 403
        assert bob.get(f"/projects/{mine}/tasks/{task}/render").status_code == 403
        theirs = annotated["project"]
        assert ann.get(f"/projects/{theirs}/files").status_code == 403
        assert len(ann.get(f"/projects/{mine}/files").json()["files"]) == 1
    finally:
        for client in clients:
            client.close()


def vendor_invoice(number: int) -> bytes:
    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_text((72, 90), f"INVOICE {1000 + number}", fontsize=16)
    page.insert_text((72, 130), f"Vendor: {VENDORS[number % len(VENDORS)]}", fontsize=12)
    page.insert_text((72, 160), f"Bill to: Customer {number}, Street {number}", fontsize=12)
    return doc.tobytes()


def test_visual_trainer_registers_a_visual_ner_model_that_predicts(api: httpx.Client) -> None:
    xml = (
        '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
        '<Label value="VENDOR"/></RectangleLabels></View>'
    )
    vendors = {"name": "vendors", "label": "VENDOR", "kind": "dictionary"}
    vendors["dictionary"] = {v: [] for v in VENDORS}
    project = create_project(api, xml, [vendors])
    docs = [(f"invoice-{i}.pdf", vendor_invoice(i)) for i in range(14)]
    files = upload(api, project, *docs).json()["files"]
    assert preannotate(api, project)["failed"] == 0
    for file in files:  # the boxes a reviewer accepted become completions
        prediction = api.get(f"/tasks/{file['task_id']}/predictions").json()[-1]
        copied = {"from_prediction": prediction["id"]}
        assert api.post(f"/tasks/{file['task_id']}/completions", json=copied).status_code == 201

    name = f"vendors_{uuid.uuid4().hex[:6]}"
    spec = {"kind": "visual_ner", "model_name": name, "epochs": 25, "resources": {"num_cpus": 0.5}}
    started = api.post(f"/projects/{project}/train", json=spec)
    assert started.status_code == 202, started.text
    trained = wait_job(api, started.json()["id"])
    assert trained["state"] == "succeeded", trained
    [version] = api.get(f"/models/{name}").json()["versions"]
    assert (version["kind"], version["labels"]) == ("visual_ner", ["VENDOR"])

    model_xml = xml.replace('<Label value="VENDOR"/>', f'<Label value="VENDOR" model="{name}_v1"/>')
    using = create_project(api, model_xml, [])
    [file] = upload(api, using, ("new.pdf", vendor_invoice(2))).json()["files"]
    assert preannotate(api, using)["failed"] == 0
    [vendor] = boxes(latest(api, file["task_id"]), "VENDOR")
    assert vendor["meta"]["text"] == ["Initech Systems"]
    assert vendor["provenance"] == {"type": "model", "name": f"{name}_v1", "version": "1"}


def test_validation_of_visual_configurations(make_model) -> None:
    from preannotate.configs.errors import ConfigError
    from preannotate.configs.project import ProjectConfig
    from preannotate.hub.validation import validate_config

    make_model("layout", kind="visual_ner", labels=["VENDOR"], embeddings="none")
    make_model("kind", kind="classification", labels=["a"], embeddings="none")
    pages = CONFIG.replace('value="$image"', 'valueList="$pages"')
    vendor = '<Label value="VENDOR" model="layout"/>'
    accepted = pages.replace('<Label value="CITY"/>', f'<Label value="CITY"/>{vendor}')
    config = validate_config(ProjectConfig(name="v", labeling_config=accepted, rules=RULES))
    [image] = config.labeling.objects
    assert (image.value, image.value_list) == ("pages", True)

    text = '<Text name="text" value="$text"/>'
    refused = {
        '<Labels name="t" toName="text"><Label value="VENDOR" model="layout"/></Labels>': (
            "'layout', a visual_ner model, where ner models are expected"
        ),
        '<Labels name="t" toName="image"><Label value="X"/></Labels>': (
            '<Labels name="t"> points at a image object; use <RectangleLabels> on an <Image>'
        ),
        '<RectangleLabels name="r" toName="text"><Label value="X"/></RectangleLabels>': (
            "points at a text object"
        ),
        '<Choices name="c" toName="text" model="kind"><Choice value="a"/></Choices>': (
            "a configuration pre-annotates either an <Image> or text, not both"
        ),
        '<Image name="back" value="$back"/><Choices name="c" toName="back" model="kind">'
        '<Choice value="a"/></Choices>': "pre-annotated on 2 images (back, image)",
    }
    for control, problem in refused.items():
        xml = CONFIG.replace("</View>", f"{text}{control}</View>")
        with pytest.raises(ConfigError, match=re.escape(problem)):
            validate_config(ProjectConfig(name="v", labeling_config=xml, rules=RULES))


def test_a_projects_document_options_set_dpi_and_ocr_languages(tmp_path: Path) -> None:
    """`documents` in the project file: pages are drawn at its DPI, and a scan is read in its
    languages (one whose Tesseract data is missing fails that task, saying so)."""
    from preannotate.annotators.visual_pipeline import VisualPipeline
    from preannotate.configs.project import parse_project_config
    from preannotate.hub.validation import validate_config

    (tmp_path / "invoice.pdf").write_bytes(invoice().tobytes())
    (tmp_path / "scan.png").write_bytes(invoice()[0].get_pixmap(dpi=100).tobytes("png"))
    tasks = [{"data": {"image": "local://invoice.pdf"}}, {"data": {"image": "local://scan.png"}}]

    def annotate(documents: dict) -> list:
        project = {"name": "v", "labeling_config": CONFIG, "rules": RULES, "documents": documents}
        pipeline = VisualPipeline(validate_config(parse_project_config(project)), root=tmp_path)
        return [p.as_json() for p in pipeline.annotate(tasks)]

    pdf, scan = annotate({"dpi": 100})
    assert {r["original_width"] for r in pdf["result"]} == {827}  # A4 at 100 DPI, not 200
    assert [r["meta"]["text"] for r in scan["result"] if "COMPANY" in r["value"]["rectanglelabels"]]
    pdf, scan = annotate({"languages": "zzz"})
    assert pdf["result"] and "zzz" in scan["error"]  # the text layer needs no OCR


def test_a_document_gets_its_class_and_relations_join_its_boxes(hub: Hub, tmp_path: Path) -> None:
    """`<Choices>` on the `<Image>` classify the whole document's text (both pages), and a
    relation between two chunks joins the first boxes of each, on their page."""
    from preannotate.annotators.visual_pipeline import VisualPipeline
    from preannotate.configs.project import parse_project_config
    from preannotate.hub.validation import validate_config

    add_classifier(
        hub,
        tmp_path / "doc_kind",
        [
            ("Invoice from a company, billed to a customer", "invoice"),
            ("Ship the parts to the office before Friday", "invoice"),
            ("The striker scored a goal and the team won", "match report"),
            ("The referee ended the match after a late goal", "match report"),
        ],
    )
    report = pymupdf.open()
    report.new_page().insert_text((72, 100), "The striker scored a late goal", fontsize=16)
    (tmp_path / "invoice.pdf").write_bytes(invoice().tobytes())
    (tmp_path / "report.pdf").write_bytes(report.tobytes())
    xml = CONFIG.replace(
        "</View>",
        '<Choices name="kind" toName="image" model="doc_kind"><Choice value="invoice"/>'
        '<Choice value="match report"/></Choices><Relations>'
        '<Relation value="lives_in" model="relation_rules_en"/></Relations></View>',
    )
    project = {
        "name": "v",
        "labeling_config": xml,
        "rules": RULES,
        "relation_rules": [{"from_label": "PERSON", "to_label": "CITY", "relation": "lives_in"}],
        "allow_mixed_embeddings": True,
    }
    pipeline = VisualPipeline(validate_config(parse_project_config(project)), root=tmp_path)
    tasks = [{"data": {"image": f"local://{name}.pdf"}} for name in ("invoice", "report")]
    invoiced, reported = [p.as_json() for p in pipeline.annotate(tasks)]

    classes = [[r for r in p["result"] if r["type"] == "choices"] for p in (invoiced, reported)]
    assert [[c["value"]["choices"] for c in found] for found in classes] == [
        [["invoice"]],
        [["match report"]],
    ]
    assert classes[0][0]["to_name"] == "image" and "item_index" not in classes[0][0]
    by_id = {r["id"]: r for r in invoiced["result"]}
    [relation] = [r for r in invoiced["result"] if r["type"] == "relation"]
    person, city = by_id[relation["from_id"]], by_id[relation["to_id"]]
    assert (relation["labels"], person["meta"]["text"], city["meta"]["text"]) == (
        ["lives_in"],
        ["John Smith"],
        ["New"],  # the first of the city's two boxes
    )
    assert person["item_index"] == city["item_index"] == 0


def test_a_scan_is_read_in_the_projects_ocr_languages(tmp_path: Path) -> None:
    """German words OCR'd as German (`tesseract-ocr-deu`, which `make install` installs)
    keep their umlauts and ß, so a rule on the real spelling finds its box; read as
    English, the same scan says "Miller" and "StraBe"."""
    from preannotate.annotators.visual_pipeline import VisualPipeline
    from preannotate.configs.project import parse_project_config
    from preannotate.hub.validation import validate_config

    letter = pymupdf.open()
    page = letter.new_page()
    for number, line in enumerate(["Rechnung der Müller GmbH", "Größe: 3 Stück, Straße 17"]):
        page.insert_text((72, 100 + 30 * number), line, fontsize=16)
    (tmp_path / "scan.png").write_bytes(page.get_pixmap(dpi=200).tobytes("png"))
    rules = [
        {"name": "company", "label": "COMPANY", "kind": "regex", "regex": r"Müller GmbH"},
        {"name": "city", "label": "CITY", "kind": "regex", "regex": r"Straße \d+"},
    ]

    def found(languages: str) -> list[list[str]]:
        project = {
            "name": "v",
            "labeling_config": CONFIG.replace(' model="ner_general_en_sm"', ""),  # rules only
            "rules": rules,
            "documents": {"languages": languages},
        }
        pipeline = VisualPipeline(validate_config(parse_project_config(project)), root=tmp_path)
        [prediction] = pipeline.annotate([{"data": {"image": "local://scan.png"}}])
        return [r["meta"]["text"] for r in prediction.result]

    assert found("deu+eng") == [["Müller GmbH"], ["Straße 17"]]
    assert found("eng") != found("deu+eng")


KEY_VALUE_PLUGIN = """
from preannotate.annotators.layout import LayoutRuntime
from preannotate.annotators.spans import Source, Span


class KeyValueLayout(LayoutRuntime):
    image_sizes = []

    def page_entities(self, pages):
        source = Source("model", self.model.name, self.model.manifest.version)
        found = []
        for page in pages:
            self.image_sizes.append(page.image().size)
            words, spans = page.page.words, []
            for key in (w for w in words if w.text == "Vendor:"):
                value = [i for i, w in enumerate(words) if w.line == key.line and w.x0 > key.x1]
                if value:
                    start, end = page.text.offsets[value[0]][0], page.text.offsets[value[-1]][1]
                    spans.append(Span(start, end, "VENDOR", source, 0.8))
            found.append(spans)
        return found
"""
"""The plugin of docs/visual.md, which labels the words right of "Vendor:" on its line,
and notes the size of each page image it was given."""


def test_a_layout_runtime_plugin_reads_words_boxes_and_the_page_image(
    make_model, hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `visual_ner` model whose runtime is an installed plugin (`preannotate.runtimes`
    entry point) gets each page's words with boxes and its image; its spans become boxes."""
    from preannotate.annotators.visual_pipeline import VisualPipeline
    from preannotate.configs.project import parse_project_config
    from preannotate.hub.validation import validate_config

    site = tmp_path / "site"
    info = site / "key_value_layout-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: key-value-layout\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[preannotate.runtimes]\nkey_value = key_value_layout:KeyValueLayout\n"
    )
    (site / "key_value_layout.py").write_text(KEY_VALUE_PLUGIN)
    monkeypatch.syspath_prepend(str(site))
    make_model(
        "vendors", kind="visual_ner", labels=["VENDOR"], embeddings="none", runtime="key_value"
    )
    xml = CONFIG.replace('<Label value="COMPANY"/>', '<Label value="VENDOR" model="vendors"/>')
    (tmp_path / "invoice.pdf").write_bytes(vendor_invoice(2))
    project = {"name": "v", "labeling_config": xml, "documents": {"dpi": 100}}
    pipeline = VisualPipeline(validate_config(parse_project_config(project), hub), hub, tmp_path)
    [prediction] = pipeline.annotate([{"id": 1, "data": {"image": "local://invoice.pdf"}}])

    [vendor] = boxes(prediction.as_json()["result"], "VENDOR")
    assert vendor["meta"]["text"] == ["Initech Systems"]
    assert vendor["provenance"] == {"type": "model", "name": "vendors", "version": "1"}
    [box] = true_boxes(0, "Initech Systems", pymupdf.open(stream=vendor_invoice(2)))
    assert iou(region_box(vendor), box) >= 0.5
    from key_value_layout import KeyValueLayout

    assert KeyValueLayout.image_sizes == [(827, 1170)]  # A4 drawn at the project's 100 DPI
