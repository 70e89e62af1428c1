"""The web page of ``aetnet serve`` (``GET /``): drop a document, see the drawn prediction beside the JSON.

One self-contained HTML document (no external scripts or styles): the page posts the file (and the
question, for QA models) to ``/predict?visualize=true`` and shows each page's drawn PNG next to the
records (with the bulky image fields left out of the JSON view).
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>aetnet prediction</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
 #drop { border: 2px dashed #888; border-radius: 8px; padding: 2em; text-align: center; cursor: pointer; }
 #drop.over { background: #eef6ff; border-color: #0082c8; }
 #result { display: flex; gap: 1.5em; margin-top: 1em; align-items: flex-start; }
 #pictures img { max-width: 48vw; border: 1px solid #ccc; display: block; margin-bottom: 1em; }
 #json { flex: 1; background: #f6f6f6; padding: 1em; max-height: 85vh; overflow: auto; font-size: 12px; }
 #status.error { color: #b00020; }
</style>
</head>
<body>
<h1>aetnet prediction</h1>
<p id="model">loading model information...</p>
<form id="form">
 <div id="drop">Drop a PNG, JPEG, TIFF or PDF here, or click to choose one.
  <input id="file" name="file" type="file" accept=".png,.jpg,.jpeg,.tif,.tiff,.pdf" hidden>
 </div>
 <p id="question-row" hidden><label>Question: <input id="question" name="question" size="60"></label></p>
</form>
<p id="status"></p>
<div id="result"><div id="pictures"></div><pre id="json"></pre></div>
<script>
const drop = document.getElementById("drop"), input = document.getElementById("file");
const statusLine = document.getElementById("status");
let kind = null;
fetch("health").then(r => r.json()).then(h => {
  kind = h.kind;
  document.getElementById("model").textContent =
    `${h.task} model (${h.kind}), backend ${h.backend}, OCR ${h.ocr}` + (h.labels ? `: ${h.labels.join(", ")}` : "");
  document.getElementById("question-row").hidden = h.kind !== "qa";
});
drop.addEventListener("click", () => input.click());
drop.addEventListener("dragover", e => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", e => {
  e.preventDefault(); drop.classList.remove("over");
  if (e.dataTransfer.files.length) send(e.dataTransfer.files[0]);
});
input.addEventListener("change", () => { if (input.files.length) send(input.files[0]); });

async function send(file) {
  const body = new FormData();
  body.append("file", file, file.name);
  const question = document.getElementById("question").value;
  if (kind === "qa" && question) body.append("question", question);
  statusLine.className = ""; statusLine.textContent = `predicting ${file.name}...`;
  document.getElementById("pictures").innerHTML = ""; document.getElementById("json").textContent = "";
  const response = await fetch("predict?visualize=true", { method: "POST", body });
  const answer = await response.json();
  if (!response.ok) {
    statusLine.className = "error"; statusLine.textContent = `error ${response.status}: ${answer.detail}`;
    return;
  }
  const pictures = document.getElementById("pictures");
  for (const record of answer) {
    const img = document.createElement("img");
    img.src = record.image; img.alt = `page ${record.page}`; img.className = "prediction";
    pictures.appendChild(img);
  }
  document.getElementById("json").textContent =
    JSON.stringify(answer.map(({ image, ...rest }) => rest), null, 1);
  statusLine.textContent = `${file.name}: ${answer.length} page(s)` + summary(answer);
}

function summary(records) {
  return records.map(r => r.kind === "sequence" ? `; page ${r.page}: ${r.label}`
    : r.kind === "qa" ? `; page ${r.page}: ${r.answer ? r.answer.text : "no answer"}`
    : `; page ${r.page}: ${r.entities.length} entities` + (r.pairs ? `, ${r.pairs.length} key-value pairs` : "")
  ).join("");
}
</script>
</body>
</html>
"""
