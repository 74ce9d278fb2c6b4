// Small behaviours the pages need beside htmx: open and close dialogs, select every task
// on a page, and read a chosen task file into the import box. No build step, no framework.
document.addEventListener("click", (event) => {
  const opener = event.target.closest("[data-opens]");
  if (opener) document.getElementById(opener.dataset.opens).showModal();
  const closer = event.target.closest("[data-closes]");
  if (closer) document.getElementById(closer.dataset.closes).close();
});

document.addEventListener("change", (event) => {
  const all = event.target.closest("[data-selects]");
  if (all) {
    const form = all.form || document;
    for (const box of form.querySelectorAll(`input[name="${all.dataset.selects}"]`)) {
      box.checked = all.checked;
    }
  }
  const file = event.target.closest("input[type=file][data-fills]");
  if (file && file.files.length) {
    const chosen = file.files[0];
    const format = chosen.name.toLowerCase().match(/\.(jsonl|ndjson|json|csv)$/);
    chosen.text().then((text) => {
      document.getElementById(file.dataset.fills).value = text;
      file.form.querySelector("[data-file-name]").value = chosen.name;
      if (format) file.form.format.value = format[1] === "ndjson" ? "jsonl" : format[1];
    });
  }
});
