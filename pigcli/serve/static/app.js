// The pig search page. It asks GET /search (a text, or like=ID: that video's own vector as the query) and
// shows each video as a strip of the frames the model saw; a click or Enter on a card plays the video
// (/video) and draws the patches the ITS selector chose (/patches) on its frames.
// Its URL is the search: /?q=TEXT&k=12 or /?like=ID&k=12, plus &show (open the first result) or &show=ID
// (open that video). Each search is a history entry, so back and forward restore it.
// Everything is in this file and style.css: no inline script or style, so the page runs under a
// Content-Security-Policy of default-src 'self'.
const $ = (id) => document.getElementById(id);
const MAX_K = 1000;  // the server's limit on k (searcher.py)

let collection = null;           // GET /health: videos, captions, examples (null until it answers)
let healthAnswered = null;       // a promise: /health answered (or failed)
let latest = { seq: 0, controller: null };  // the newest search: older answers are dropped, their requests cancelled
let current = null;              // the search on the page: {params, results}
let opened = 0;                  // the newest result opened in the panel (a later click wins)
let openedFrom = null;           // the card that opened it: focus returns there when the panel is closed

async function getJson(url, signal) {
  const response = await fetch(url, { signal });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function element(tag, className, text) {
  const made = document.createElement(tag);
  if (className) made.className = className;
  if (text !== undefined) made.textContent = text;
  return made;
}

// --- the search in the URL --------------------------------------------------------------------------------

function paramsFromUrl() {
  const url = new URLSearchParams(location.search);
  const k = url.get("k");
  return { q: url.get("q") || "", like: url.get("like") || "", k: /^[1-9][0-9]*$/.test(k || "") ? k : $("k").value,
    show: url.get("show") };
}

function pageUrl(params, show) {
  const url = new URLSearchParams(params.like ? { like: params.like } : { q: params.q });
  url.set("k", params.k);
  if (show !== undefined && show !== null) url.set("show", show);
  return `/?${url}`;
}

function apiUrl(params, k, format) {
  const url = new URLSearchParams(params.like ? { like: params.like } : { q: params.q });
  url.set("k", k);
  if (format) url.set("format", format);
  return `/search?${url}`;
}

function selectK(k) {  // a k the dropdown lacks (from a URL) becomes one of its choices
  const select = $("k");
  if (![...select.options].some((option) => option.value === String(k))) select.add(new Option(k, k));
  select.value = String(k);
}

function go(params) {  // a new search: a new history entry
  const url = pageUrl(params);
  if (url !== location.pathname + location.search) history.pushState(null, "", url);
  start(params);
}

function start(params) {  // show the search params describe (from a submit, a URL, back or forward)
  $("q").value = params.q;
  selectK(params.k);
  closeDetail();
  if (!params.q && !params.like) {
    cancel();
    current = null;
    clearResults("");
    document.title = "pig search";
    showLanding();
    return;
  }
  $("landing").hidden = true;
  run(params, Number(params.k), false);
}

function cancel() {
  if (latest.controller) latest.controller.abort();
  latest = { seq: latest.seq + 1, controller: new AbortController() };
  return latest;
}

// --- searching ----------------------------------------------------------------------------------------------

async function run(params, k, append) {
  const mine = cancel();
  if (append) {
    $("more").disabled = true;
    $("more").textContent = "loading...";
  } else {
    clearResults("searching...");
    $("status").classList.add("busy");
  }
  const started = performance.now();
  try {
    const answer = await getJson(apiUrl(params, k), mine.controller.signal);
    await healthAnswered;  // the status line says "12 of N"
    if (mine !== latest) return;  // a newer search started meanwhile
    current = { params, results: answer.results };
    document.title = `${params.like ? `like ${params.like}` : params.q} - pig search`;
    $("results").replaceChildren(...answer.results.map((hit) => card(hit, answer.results)));
    describe(params, answer, Math.round(performance.now() - started));
    if (!append && params.show !== null && params.show !== undefined) openRequested(params.show);
  } catch (err) {
    if (mine !== latest) return;
    setStatus(err.message, "error");
  } finally {
    if (mine === latest) {
      $("more").disabled = false;
      $("more").textContent = "more results";
    }
  }
}

function openRequested(show) {  // &show=ID opens that video, a bare &show the first result
  const hit = current.results.find((result) => result.video === show) ||
    (show === "" || show === "1" ? current.results[0] : undefined);
  if (hit) openDetail(hit);
}

function clearResults(status) {
  $("results").replaceChildren();
  $("tools").hidden = true;
  $("more").hidden = true;
  $("hint").hidden = true;
  setStatus(status, "");
}

function setStatus(text, className) {
  $("status").textContent = text;
  $("status").className = className;
  $("status").title = text;  // the status line is cut to one line: the whole text on hover
}

function describe(params, answer, ms) {
  const shown = answer.results.length;
  const total = collection ? collection.videos : shown;
  const what = params.like ? `like ${params.like}` : `for "${answer.query}"`;
  setStatus(`${shown} of ${total} videos ${what} in ${ms} ms` +
    (answer.truncated ? " (query cut to the model's text length)" : ""), "");
  $("tools").hidden = false;
  $("download-json").href = apiUrl(params, shown);
  $("download-csv").href = apiUrl(params, shown, "csv");
  $("more").hidden = shown >= Math.min(total, MAX_K) || shown < Number(params.k);
  const weak = collection && collection.weak_below;
  if (weak && answer.results.length && answer.results[0].score < weak && !params.like) {
    $("hint").textContent = `Even the best match is weak (score ${answer.results[0].score.toFixed(4)}, ` +
      `below ${weak.toFixed(4)}): the collection may have nothing like this; try other words.`;
    $("hint").hidden = false;
  }
}

// --- cards ----------------------------------------------------------------------------------------------------

function card(hit, results) {
  const made = element("article", "card");
  made.tabIndex = 0;
  made.setAttribute("role", "button");
  made.setAttribute("aria-label", `#${hit.rank} ${hit.video}, score ${hit.score.toFixed(4)}: open`);
  made.title = "click or Enter: play, and show the patches ITS chose";
  const img = element("img");
  img.src = `/thumb?id=${encodeURIComponent(hit.video)}&n=4`;
  img.alt = hit.video;
  img.loading = "lazy";
  img.addEventListener("error", () => replaceWithReason(img, img.src));
  const meta = element("div", "meta");
  meta.append(element("span", "rank", `#${hit.rank}`), element("span", "video", hit.video),
    element("span", "score", hit.score.toFixed(4)));
  made.append(img, meta, scoreBar(hit.score, results));
  if (hit.caption) made.append(element("p", "caption", hit.caption));
  const actions = element("div", "actions");
  const like = element("button", "link", "more like this");
  like.type = "button";
  like.addEventListener("click", () => go({ q: "", like: hit.video, k: $("k").value, show: null }));
  const link = element("button", "link", "copy link");
  link.type = "button";
  link.addEventListener("click", () => copyLink(pageUrl(current.params, hit.video)));
  actions.append(like, link);
  made.append(actions);
  made.addEventListener("click", (event) => { if (!event.target.closest("button")) openDetail(hit, made); });
  made.addEventListener("keydown", (event) => {
    if (event.target === made && (event.key === "Enter" || event.key === " ")) {
      event.preventDefault();
      openDetail(hit, made);
    }
  });
  return made;
}

function scoreBar(score, results) {  // the score relative to the best shown: full for the best, empty at 0
  const best = results[0].score;
  const floor = Math.min(0, results[results.length - 1].score);  // (or at the lowest shown, below 0)
  const bar = element("meter", "bar");
  bar.min = floor;
  bar.max = best > floor ? best : floor + 1;
  bar.value = score;
  bar.title = `${(100 * (score - floor) / (bar.max - floor)).toFixed(0)}% of the best score`;
  return bar;
}

async function reasonFor(url) {  // the server's reason a picture cannot be shown (a missing source video, say)
  try {
    return (await getJson(url)).error || "no picture";
  } catch (err) {
    return err.message;
  }
}

async function replaceWithReason(img, url) {
  const reason = element("p", "reason", "no picture");
  img.replaceWith(reason);
  reason.textContent = await reasonFor(url);
}

async function copyLink(path) {
  const url = new URL(path, location.href).href;
  try {
    await navigator.clipboard.writeText(url);
    setStatus(`link copied: ${url}`, "");
  } catch {
    setStatus(`copy this link: ${url}`, "");
  }
}

// --- the detail panel -------------------------------------------------------------------------------------------

async function openDetail(hit, from) {
  const mine = ++opened;
  openedFrom = from || null;
  const id = encodeURIComponent(hit.video);
  $("detail").hidden = false;
  $("detail-title").textContent = `#${hit.rank} ${hit.video} (score ${hit.score.toFixed(4)})`;
  $("detail-caption").textContent = hit.caption || "";
  $("detail-reason").hidden = true;
  $("detail-body").hidden = false;
  $("player").hidden = false;
  $("frames").replaceChildren();
  $("detail").scrollIntoView({ block: "nearest" });
  try {
    const chosen = await getJson(`/patches?id=${id}`);
    const strip = await loadImage(`/thumb?id=${id}&n=${chosen.frames}`);
    if (mine !== opened) return;
    $("player").src = `/video?id=${id}`;
    $("player").play().catch(() => {});
    drawFrames(strip, chosen);
  } catch (err) {
    if (mine !== opened) return;
    stopPlayer();
    $("detail-body").hidden = true;  // no dead player, no boxes floating on nothing
    $("detail-reason").textContent = err.message;
    $("detail-reason").hidden = false;
  }
}

function loadImage(url) {  // resolves with the loaded image; rejects with the server's reason
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.addEventListener("load", () => resolve(image));
    image.addEventListener("error", async () => reject(new Error(await reasonFor(url))));
    image.src = url;
  });
}

function drawFrames(strip, chosen) {  // each frame of the strip on its own canvas, the chosen patches over it
  const size = strip.naturalHeight;
  const cells = [];
  for (let t = 0; t < chosen.frames; t++) {
    const cell = element("div", "frame");
    const canvas = element("canvas");
    canvas.width = canvas.height = size;
    canvas.getContext("2d").drawImage(strip, t * size, 0, size, size, 0, 0, size, size);
    canvas.setAttribute("aria-label", `frame ${t + 1}`);
    cell.append(canvas);
    cells.push(cell);
  }
  const side = chosen.image_size;
  chosen.boxes.forEach((b, order) => {
    const box = element("div", "box", String(order + 1));
    box.title = `ITS score ${b.score.toPrecision(2)}`;
    Object.assign(box.style, { left: `${100 * b.x0 / side}%`, top: `${100 * b.y0 / side}%`,
      width: `${100 * (b.x1 - b.x0) / side}%`, height: `${100 * (b.y1 - b.y0) / side}%` });
    cells[b.frame].append(box);
  });
  $("frames").replaceChildren(...cells);
}

function stopPlayer() {
  const player = $("player");
  player.pause();
  player.removeAttribute("src");
  player.load();
}

function closeDetail() {
  opened++;  // a panel still loading stays closed
  $("detail").hidden = true;
  stopPlayer();
}

function closeByHand() {  // the close button or Escape: back to the card the panel was opened from
  const wasOpen = !$("detail").hidden;
  closeDetail();
  if (wasOpen && openedFrom && openedFrom.isConnected) openedFrom.focus();
}

// --- the landing page -------------------------------------------------------------------------------------------

async function showLanding() {
  $("landing").hidden = false;
  await healthAnswered;
  if (!collection) return;
  $("collection").textContent = `${collection.videos} videos indexed` +
    (collection.captions ? `, ${collection.captions} with captions` : "") + ". Describe what happens in one." +
    (collection.missing_videos ? ` (The source files of ${collection.missing_videos} are missing: ` +
      "their cards have no pictures.)" : "");
  const examples = collection.examples || [];
  $("examples-block").hidden = !examples.length;
  $("examples").replaceChildren(...examples.map((text) => {
    const item = element("li");
    const link = element("a", "", text);
    link.href = pageUrl({ q: text, k: $("k").value });
    link.addEventListener("click", (event) => {
      event.preventDefault();
      go({ q: text, like: "", k: $("k").value, show: null });
    });
    item.append(link);
    return item;
  }));
}

// --- wiring ---------------------------------------------------------------------------------------------------------

$("search").addEventListener("submit", (event) => {
  event.preventDefault();
  const query = $("q").value.trim();
  if (query) go({ q: query, like: "", k: $("k").value, show: null });
});
$("more").addEventListener("click", () => {
  if (current) run(current.params, current.results.length + Number(current.params.k), true);
});
$("copy-search").addEventListener("click", () => { if (current) copyLink(pageUrl(current.params)); });
$("close").addEventListener("click", closeByHand);
document.addEventListener("keydown", (event) => { if (event.key === "Escape") closeByHand(); });
window.addEventListener("popstate", () => start(paramsFromUrl()));

// asked once, alongside the first search (on a large collection /health counts the missing files)
healthAnswered = getJson("/health").then((health) => { collection = health; }, () => { collection = null; });
start(paramsFromUrl());
