// The pig search page: asks GET /search, shows each video as a strip of the frames the model saw, and on a
// click plays the video (/video, range requests) and draws the ITS-selected patches (/patches) on its frames.
const $ = (id) => document.getElementById(id);

async function getJson(url) {
  const response = await fetch(url);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function param(name) {
  return new URLSearchParams(location.search).get(name);
}

async function search(query, k, open) {
  $("status").textContent = "searching...";
  $("status").className = "";
  const started = performance.now();
  try {
    const answer = await getJson(`/search?q=${encodeURIComponent(query)}&k=${k}`);
    const ms = Math.round(performance.now() - started);
    $("status").textContent = `${answer.results.length} videos for "${answer.query}" in ${ms} ms` +
      (answer.truncated ? " (query cut to the model's text length)" : "");
    render(answer.results);
    if (open && answer.results.length) show(answer.results[0]);
  } catch (err) {
    $("status").textContent = err.message;
    $("status").className = "error";
  }
}

function render(results) {
  const grid = $("results");
  grid.replaceChildren();
  for (const hit of results) {
    const card = document.createElement("article");
    card.className = "card";
    card.title = "click: play, and show the patches ITS chose";
    const img = document.createElement("img");
    img.src = `/thumb?id=${encodeURIComponent(hit.video)}&n=4`;
    img.alt = hit.video;
    img.loading = "lazy";
    const meta = document.createElement("div");
    meta.className = "meta";
    for (const [cls, text] of [["rank", `#${hit.rank}`], ["video", hit.video], ["score", hit.score.toFixed(4)]]) {
      const span = document.createElement("span");
      span.className = cls;
      span.textContent = text;
      meta.append(span);
    }
    card.append(img, meta);
    card.addEventListener("click", () => show(hit));
    grid.append(card);
  }
}

async function show(hit) {
  const id = encodeURIComponent(hit.video);
  $("detail").hidden = false;
  $("detail-title").textContent = `#${hit.rank} ${hit.video} (score ${hit.score.toFixed(4)})`;
  $("player").src = `/video?id=${id}`;
  $("player").play().catch(() => {});
  const frames = $("frames");
  frames.replaceChildren();
  let chosen;
  try {
    chosen = await getJson(`/patches?id=${id}`);
  } catch (err) {
    frames.textContent = err.message;
    return;
  }
  for (let t = 0; t < chosen.frames; t++) {
    const frame = document.createElement("div");
    frame.className = "frame";
    const img = document.createElement("img");
    img.alt = `frame ${t + 1}`;
    // one frame of the strip: the strip of all T frames, shifted
    img.style.objectFit = "none";
    frame.append(img);
    frames.append(frame);
  }
  drawFrames(id, chosen);
  scrollTo({ top: 0 });
}

function drawFrames(id, chosen) {
  const cells = $("frames").children;
  const strip = new Image();
  strip.onload = () => {
    const size = strip.naturalHeight;
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = size;
    const context = canvas.getContext("2d");
    for (let t = 0; t < cells.length; t++) {
      context.drawImage(strip, t * size, 0, size, size, 0, 0, size, size);
      const img = cells[t].querySelector("img");
      img.style.objectFit = "fill";
      img.src = canvas.toDataURL("image/jpeg", 0.9);
    }
  };
  strip.src = `/thumb?id=${id}&n=${chosen.frames}`;
  const side = chosen.image_size;
  chosen.boxes.forEach((b, order) => {
    const box = document.createElement("div");
    box.className = "box";
    box.title = `ITS score ${b.score.toPrecision(2)}`;
    Object.assign(box.style, { left: `${100 * b.x0 / side}%`, top: `${100 * b.y0 / side}%`,
      width: `${100 * (b.x1 - b.x0) / side}%`, height: `${100 * (b.y1 - b.y0) / side}%` });
    box.textContent = order + 1;
    cells[b.frame].append(box);
  });
}

$("search").addEventListener("submit", (event) => {
  event.preventDefault();
  const query = $("q").value.trim();
  if (!query) return;
  history.replaceState(null, "", `/?q=${encodeURIComponent(query)}&k=${$("k").value}`);
  search(query, $("k").value, false);
});
$("close").addEventListener("click", () => { $("detail").hidden = true; $("player").pause(); });

const initial = param("q");
if (initial) {
  $("q").value = initial;
  if (param("k")) $("k").value = param("k");
  search(initial, param("k") || $("k").value, param("show") !== null);
}
