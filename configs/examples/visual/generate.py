"""Write the example's documents: two invoices with a text layer (the first has two pages)
and a scanned one (a PNG, read by OCR), generated with PyMuPDF so no binaries are kept.

    python configs/examples/visual/generate.py FOLDER
"""

import sys
from pathlib import Path

INVOICES = {
    "invoice-1.pdf": [
        [
            "INVOICE INV-20417",
            "From: Northwind Traders, 12 Harbour Street, Boston",
            "To: Contoso Pharmacy, attention of Maria Garcia",
            "Ten boxes of nitrile gloves shipped from Chicago",
            "Total due: $1,240.00 within thirty days",
        ],
        [
            "Page 2 of INV-20417",
            "Questions about this invoice go to David Chen",
            "at the Northwind Traders office in Seattle",
        ],
    ],
    "invoice-2.pdf": [
        [
            "INVOICE INV-20533",
            "From: Fabrikam Medical Supply, Denver",
            "To: Tailspin Clinic, attention of James Wilson",
            "Forty boxes of sterile gauze and twelve scalpels",
        ]
    ],
    "invoice-3.png": [
        [
            "INVOICE INV-20610",
            "From: Litware Instruments, Toronto",
            "To: Adventure Works Hospital, attention of Sarah Kim",
        ]
    ],
}


def write_documents(folder: Path) -> list[Path]:
    """The example's documents, written into `folder`; returns their paths."""
    import pymupdf

    paths = []
    for name, pages in INVOICES.items():
        doc = pymupdf.open()
        for lines in pages:
            page = doc.new_page()
            for number, line in enumerate(lines):
                page.insert_text((60, 90 + 28 * number), line, fontsize=14)
        path = folder / name
        if path.suffix == ".png":  # a scan: pixels only, no text layer
            path.write_bytes(doc[0].get_pixmap(dpi=200).tobytes("png"))
        else:
            doc.save(path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write_documents(Path(sys.argv[1])):
        print(written)
