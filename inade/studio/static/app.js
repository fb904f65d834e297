// INADE Studio page. It paints the label and instance maps and keeps the page's state
// (maps, latents, history); the server does every model step (POST /api/act) and
// answers with PNGs. One request is in flight at a time: strokes made meanwhile are
// kept and sent together as one edit when the answer arrives (older repaints are
// superseded, never piled up). Requests name the session id the server issued
// (POST /api/session); when the server no longer knows it (410: restarted, or the id was
// the least recently used of many) the page takes a new one and sends the request again.
"use strict";

const $ = (id) => document.getElementById(id);

const S = {
  info: null, W: 0, H: 0, scale: 1,
  label: null, inst: null,            // Uint16Array [H*W], the maps as painted
  latents: null,                      // {noise, z, L} as the server sent them (base64)
  image: null, classes: [],           // data URL of the picture; class of each instance
  selected: -1, locked: new Set(), cls: 0, tool: "brush",
  history: [], hpos: -1,
  busy: false, dirty: false, version: 0, queue: [],
  client: null,                       // session id from POST /api/session
  reference: null, refPoint: null, stroke: null,
};
window.studio = S;  // for the browser test and the console
S.idle = () => !S.busy && !S.dirty && S.queue.length === 0;

// ---------------------------------------------------------------- wire formats
function b64FromBytes(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}
function bytesFromB64(text) {
  const s = atob(text), out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}
const encodeMap = (a) => b64FromBytes(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
const decodeMap = (text) => new Uint16Array(bytesFromB64(text).buffer);
function fileB64(file) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(String(r.result).split(",", 2)[1] || "");
    r.onerror = () => reject(r.error);
    r.readAsDataURL(file);
  });
}

// ---------------------------------------------------------------- messages
function say(text, error = false) {
  const m = $("message");
  m.textContent = text;
  m.className = error ? "error" : "ok";
}

// ---------------------------------------------------------------- requests
function stateJSON() {
  const st = { label: encodeMap(S.label), inst: encodeMap(S.inst) };
  if (S.latents) Object.assign(st, S.latents);
  return st;
}
function takeSeed(n = 1) {
  const input = $("seed");
  const seed = Math.max(0, parseInt(input.value, 10) || 0);
  input.value = seed + n;
  return seed;
}
async function post(url, body) {
  const r = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  return r;
}
async function newSession() {
  const r = await post("/api/session", {});
  const out = await r.json();
  if (!r.ok || !out.client) throw new Error(out.error || `no session (${r.status})`);
  S.client = out.client;
}

// Queue a user action; `needsState`: it reads the current maps (so pending strokes go first).
// `extra` may be a function, called when the request is sent: ids are read after the strokes
// before it have been renumbered.
function request(action, extra = {}, { needsState = true, seeds = 1 } = {}) {
  S.queue.push({ action, extra, needsState, seeds });
  pump();
}

function pump() {
  if (S.busy) return;
  if (S.dirty && S.latents) return void send({ action: "edit", extra: {}, needsState: true, seeds: 1 }, true);
  const next = S.queue.shift();
  if (next) send(next, false);
}

async function send(job, isEdit) {
  if (job.needsState && !S.latents) { say("load a layout first (an example or your own maps)", true); pump(); return; }
  S.busy = true;
  $("busy").hidden = false;
  const sentVersion = S.version;
  const snap = isEdit ? { label: S.label.slice(), inst: S.inst.slice(), L: S.latents.L } : null;
  if (isEdit) S.dirty = false;
  const extra = typeof job.extra === "function" ? job.extra() : job.extra;
  const body = { action: job.action, seed: takeSeed(job.seeds), locked: [...S.locked], supersedable: isEdit, ...extra };
  if (job.needsState) body.state = stateJSON();
  try {
    if (!S.client) await newSession();
    body.client = S.client;
    const r = await post("/api/act", body);
    const out = await r.json().catch(() => ({ error: `the server answered ${r.status} without a message` }));
    if (r.status === 410 && out.session === "unknown" && !job.renewed) {  // a new session, then the same request
      S.client = null;
      if (isEdit) S.dirty = true; else S.queue.unshift({ ...job, extra, renewed: true });
    }
    else if (r.status === 409) { if (isEdit) S.dirty = true; }
    else if (!r.ok || out.error) failed(out.error || `error ${r.status}`, isEdit);
    else if (isEdit) applyEdit(out, snap, sentVersion);
    else handle(job.action, out);
  } catch (err) {
    failed(`the server cannot be reached (${err.message}); is it still running?`, isEdit);
  } finally {
    S.busy = false;
    $("busy").hidden = true;
    pump();
  }
}

function failed(message, isEdit) {
  say(message, true);
  if (isEdit && S.hpos >= 0) restore(S.hpos, false);  // the maps go back to the last picture
}

// ---------------------------------------------------------------- answers
function adopt(out, note) {
  S.label = decodeMap(out.state.label);
  S.inst = decodeMap(out.state.inst);
  S.latents = { noise: out.state.noise, z: out.state.z, L: out.state.L };
  S.classes = out.classes;
  S.image = out.image;
  $("synth").src = out.image;
  if (out.instance !== undefined) S.selected = out.instance;
  if (S.selected >= S.latents.L) S.selected = -1;
  for (const i of [...S.locked]) if (i >= S.latents.L) S.locked.delete(i);
  S.version++;
  remember(note || out.note);
  say(out.note || note);
  render();
}

function handle(action, out) {
  if (action === "variations") return showVariations(out);
  if (action === "reference") return say(out.note);
  if (action === "example" || action === "upload") { S.locked.clear(); S.selected = -1; }
  adopt(out);
}

// An edit's answer renumbers instances (compact ids). Strokes painted while it ran are kept:
// their pixels keep the painted class and take the new number of the instance they joined.
function applyEdit(out, snap, sentVersion) {
  const remap = (i) => (i < out.id_map.length ? out.id_map[i] : -1);
  S.locked = new Set([...S.locked].map(remap).filter((i) => i >= 0));
  S.selected = S.selected >= 0 ? remap(S.selected) : -1;
  if (S.version === sentVersion) return adopt(out);
  const label = decodeMap(out.state.label), inst = decodeMap(out.state.inst);
  const fresh = new Map();
  for (let p = 0; p < inst.length; p++) {
    if (S.label[p] === snap.label[p] && S.inst[p] === snap.inst[p]) continue;
    label[p] = S.label[p];
    const r = S.inst[p];
    let id = r < snap.L ? remap(r) : -1;
    if (id < 0) { if (!fresh.has(r)) fresh.set(r, out.state.L + fresh.size); id = fresh.get(r); }
    inst[p] = id;
  }
  S.label = label; S.inst = inst;
  S.latents = { noise: out.state.noise, z: out.state.z, L: out.state.L };
  S.image = out.image;
  $("synth").src = out.image;
  S.dirty = true;  // the strokes since go in the next edit
  render();
}

// ---------------------------------------------------------------- history (undo, redo, seeds)
function remember(note) {
  S.history = S.history.slice(0, S.hpos + 1);
  S.history.push({ label: S.label.slice(), inst: S.inst.slice(), latents: S.latents, classes: S.classes,
    image: S.image, locked: [...S.locked], selected: S.selected, note });
  if (S.history.length > 200) S.history.shift();
  S.hpos = S.history.length - 1;
  renderHistory();
}
function restore(pos, announce = true) {
  const h = S.history[pos];
  if (!h) return;
  S.hpos = pos;
  S.label = h.label.slice(); S.inst = h.inst.slice();
  S.latents = h.latents; S.classes = h.classes; S.image = h.image;
  S.locked = new Set(h.locked); S.selected = h.selected;
  S.dirty = false; S.version++;
  $("synth").src = h.image;
  if (announce) say(`back to #${pos + 1}: ${h.note}`);
  render(); renderHistory();
}
function undo() { if (!S.idle()) return say("wait for the picture to update", true); if (S.hpos > 0) restore(S.hpos - 1); else say("nothing to undo"); }
function redo() { if (!S.idle()) return say("wait for the picture to update", true); if (S.hpos < S.history.length - 1) restore(S.hpos + 1); else say("nothing to redo"); }
function renderHistory() {
  const ol = $("history");
  ol.replaceChildren(...S.history.map((h, i) => {
    const li = document.createElement("li");
    li.textContent = h.note;
    if (i === S.hpos) li.className = "current";
    li.onclick = () => S.idle() ? restore(i) : say("wait for the picture to update", true);
    return li;
  }));
}

// ---------------------------------------------------------------- drawing the layout
let colors = [];
function render() {
  const cv = $("label-canvas"), ctx = cv.getContext("2d");
  const img = ctx.createImageData(S.W, S.H), d = img.data;
  for (let y = 0; y < S.H; y++) {
    for (let x = 0; x < S.W; x++) {
      const p = y * S.W + x, c = colors[S.label[p]] || [0, 0, 0], id = S.inst[p];
      let f = 1;
      const edge = (x + 1 < S.W && S.inst[p + 1] !== id) || (y + 1 < S.H && S.inst[p + S.W] !== id);
      if (edge) f = 0.55;
      if (S.locked.has(id) && (x + y) % 6 === 0) f = 0.4;
      let [r, g, b] = [c[0] * f, c[1] * f, c[2] * f];
      if (id === S.selected) { r = r * 0.6 + 102; g = g * 0.6 + 102; b = b * 0.6 + 102; if (edge) r = g = b = 255; }
      d.set([r, g, b, 255], 4 * p);
    }
  }
  ctx.putImageData(img, 0, 0);
  if (S.stroke && S.stroke.tool === "line" && S.stroke.end) {
    ctx.strokeStyle = S.info.colors[S.stroke.cls];
    ctx.lineWidth = sizeValue();
    ctx.lineCap = "round";
    ctx.beginPath();
    ctx.moveTo(S.stroke.start[0] + 0.5, S.stroke.start[1] + 0.5);
    ctx.lineTo(S.stroke.end[0] + 0.5, S.stroke.end[1] + 0.5);
    ctx.stroke();
  }
  renderSelection();
}

function renderSelection() {
  const sel = S.selected;
  const name = sel >= 0 ? S.info.classes[classOf(sel)] : "";
  $("selected").textContent = sel >= 0 ? `instance ${sel} (${name})${S.locked.has(sel) ? ", locked" : ""}` : "nothing selected";
  $("lock").textContent = S.locked.has(sel) ? "Unlock" : "Lock";
  const ul = $("instances");
  const L = S.latents ? S.latents.L : 0;
  const items = [];
  for (let i = 0; i < L; i++) {
    const li = document.createElement("li");
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = S.info.colors[classOf(i)];
    li.append(sw, `${i} ${S.info.classes[classOf(i)] || "?"}${S.locked.has(i) ? " 🔒" : ""}`);
    li.dataset.instance = i;
    if (i === sel) li.className = "selected";
    li.onclick = () => { S.selected = i; render(); };
    items.push(li);
  }
  ul.replaceChildren(...items);
}

function classOf(id) {
  if (S.classes[id] !== undefined && !S.dirty) return S.classes[id];
  const p = S.inst.indexOf(id);
  return p >= 0 ? S.label[p] : 0;
}

// ---------------------------------------------------------------- painting
const sizeValue = () => parseInt($("size").value, 10);
function mapPoint(e, el, pad = 0) {
  const r = el.getBoundingClientRect();
  const w = r.width - 2 * pad, h = r.height - 2 * pad;
  return [Math.floor((e.clientX - r.left - pad) * S.W / w), Math.floor((e.clientY - r.top - pad) * S.H / h)];
}
const inside = ([x, y]) => x >= 0 && y >= 0 && x < S.W && y < S.H;

function nextId() {
  let m = S.latents ? S.latents.L - 1 : -1;
  for (let p = 0; p < S.inst.length; p++) if (S.inst[p] > m) m = S.inst[p];
  return m + 1;
}
function eraseClass() { return S.info.dontcare !== null ? S.info.dontcare : 0; }

// The instance a class brush paints into: the selected one if it has the class, else the
// class's largest instance, else a new one.
function brushTarget(cls) {
  if (S.selected >= 0 && classOf(S.selected) === cls) return S.selected;
  const counts = new Map();
  for (let p = 0; p < S.inst.length; p++) if (S.label[p] === cls) counts.set(S.inst[p], (counts.get(S.inst[p]) || 0) + 1);
  let best = -1, n = 0;
  for (const [id, c] of counts) if (c > n) { best = id; n = c; }
  return best >= 0 ? best : nextId();
}

function stamp(x0, y0, cls, id) {
  const r = sizeValue() / 2;
  let changed = false;
  for (let y = Math.floor(y0 - r); y <= Math.ceil(y0 + r); y++) {
    for (let x = Math.floor(x0 - r); x <= Math.ceil(x0 + r); x++) {
      if (x < 0 || y < 0 || x >= S.W || y >= S.H) continue;
      if ((x - x0) ** 2 + (y - y0) ** 2 > r * r + 0.25) continue;
      const p = y * S.W + x;
      if (S.label[p] !== cls || S.inst[p] !== id) { S.label[p] = cls; S.inst[p] = id; changed = true; }
    }
  }
  return changed;
}
function segment(a, b, cls, id) {
  const n = Math.max(1, Math.ceil(Math.hypot(b[0] - a[0], b[1] - a[1])));
  let changed = false;
  for (let k = 0; k <= n; k++) changed = stamp(a[0] + (b[0] - a[0]) * k / n, a[1] + (b[1] - a[1]) * k / n, cls, id) || changed;
  return changed;
}
function fill([x, y], cls, id) {
  const W = S.W, start = y * W + x, from = S.label[start], fromId = S.inst[start];
  if (from === cls && fromId === id) return false;
  const seen = new Uint8Array(S.label.length), stack = [start];
  seen[start] = 1;
  while (stack.length) {
    const p = stack.pop();
    S.label[p] = cls; S.inst[p] = id;
    const px = p % W;
    for (const q of [px > 0 ? p - 1 : -1, px + 1 < W ? p + 1 : -1, p - W, p + W]) {
      if (q >= 0 && q < S.label.length && !seen[q] && S.label[q] === from) { seen[q] = 1; stack.push(q); }
    }
  }
  return true;
}
function merge(at) {
  const target = S.inst[at[1] * S.W + at[0]];
  if (S.selected < 0) return say("select the instance to merge into first (Select tool), then click the other one", true);
  if (target === S.selected) return say("click another instance than the selected one to merge it");
  if (classOf(target) !== classOf(S.selected)) {
    return say(`cannot merge instance ${target} (${S.info.classes[classOf(target)]}) into instance ${S.selected} ` +
      `(${S.info.classes[classOf(S.selected)]}): an instance has one class`, true);
  }
  for (let p = 0; p < S.inst.length; p++) if (S.inst[p] === target) S.inst[p] = S.selected;
  edited();
}
function edited() {
  S.version++;
  S.dirty = true;
  render();
  pump();
}

function onDown(e) {
  if (!S.latents) return say("load a layout first (an example or your own maps)", true);
  const at = mapPoint(e, $("label-canvas"));
  if (!inside(at)) return;
  const tool = S.tool;
  if (tool === "pick") { S.selected = S.inst[at[1] * S.W + at[0]]; render(); return; }
  if (tool === "merge") return merge(at);
  const cls = tool === "eraser" ? eraseClass() : S.cls;
  const id = tool === "instance" ? nextId() : brushTarget(cls);
  if (tool === "fill") { if (fill(at, cls, id)) edited(); return; }
  S.stroke = { tool, cls, id, start: at, last: at, end: null, changed: false };
  $("label-canvas").setPointerCapture(e.pointerId);
  if (tool !== "line") { S.stroke.changed = stamp(at[0], at[1], cls, id); render(); }
}
function onMove(e) {
  const st = S.stroke;
  if (!st) return;
  const at = mapPoint(e, $("label-canvas"));
  if (st.tool === "line") { st.end = at; render(); return; }
  st.changed = segment(st.last, at, st.cls, st.id) || st.changed;
  st.last = at;
  render();
}
function onUp(e) {
  const st = S.stroke;
  if (!st) return;
  S.stroke = null;
  if (st.tool === "line") st.changed = segment(st.start, mapPoint(e, $("label-canvas")), st.cls, st.id);
  if (st.tool === "instance" && st.changed) S.selected = st.id;
  if (st.changed) edited(); else render();
}

// ---------------------------------------------------------------- control
function needSelection() {
  if (S.selected < 0) { say("select an instance first: click it in the picture, or use the Select tool", true); return false; }
  return true;
}
function showVariations(out) {
  const grid = $("variation-grid");
  grid.replaceChildren(...out.variations.map((v, k) => {
    const img = document.createElement("img");
    img.src = v.image;
    img.alt = v.note;
    img.title = v.note;
    img.dataset.index = k;
    img.onclick = () => S.idle() ? adopt(v) : say("wait for the picture to update", true);
    return img;
  }));
  say(`${out.note}: click one to take it`);
}
async function loadReference() {
  const img = $("ref-image-file").files[0], inst = $("ref-inst-file").files[0];
  if (!img || !inst) return say("choose a reference image and its instance map", true);
  if (tooLarge([img, inst])) return;
  S.reference = { image_png: await fileB64(img), inst_png: await fileB64(inst) };
  S.refPoint = null;
  $("ref-point").textContent = "no reference instance chosen";
  const view = $("ref-view");
  view.src = URL.createObjectURL(img);
  view.hidden = false;
  request("reference", { reference: refPayload() }, { needsState: false, seeds: 0 });
}
const refPayload = () => ({ image_png: S.reference.image_png, inst_png: S.reference.inst_png });
function onReferenceClick(e) {
  const view = $("ref-view"), r = view.getBoundingClientRect(), pad = 8;
  const x = Math.floor((e.clientX - r.left - pad) * view.naturalWidth / (r.width - 2 * pad));
  const y = Math.floor((e.clientY - r.top - pad) * view.naturalHeight / (r.height - 2 * pad));
  S.refPoint = [x, y];
  $("ref-point").textContent = `reference point (${x}, ${y})`;
}
async function exportZip() {
  if (!S.latents) return say("nothing to export yet", true);
  if (!S.idle()) return say("wait for the picture to update, then export", true);
  try {
    const r = await post("/api/export", { action: "export", state: stateJSON() });
    if (!r.ok) return say((await r.json().catch(() => ({}))).error || `export failed (${r.status})`, true);
    const url = URL.createObjectURL(await r.blob());
    const a = document.createElement("a");
    a.href = url;
    a.download = "inade-studio.zip";
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
    say("exported inade-studio.zip (image, label, instance map, latents; README.txt has the inade-synth commands)");
  } catch (err) {
    say(`export failed: ${err.message}`, true);
  }
}
// Base64 makes a file 4/3 larger; the server refuses a request past info.max_body.
function tooLarge(files) {
  const total = files.reduce((n, f) => n + (f ? f.size : 0), 0) * 4 / 3;
  if (total <= S.info.max_body) return false;
  say(`${files.filter(Boolean).map((f) => f.name).join(" + ")}: too large (${(total / 2 ** 20).toFixed(1)} MB ` +
    `as sent); the limit is ${Math.floor(S.info.max_body / 2 ** 20)} MB per upload`, true);
  return true;
}
async function upload() {
  const lab = $("upload-label").files[0], inst = $("upload-inst").files[0];
  if (!lab) return say("choose a label map PNG (and optionally its instance map)", true);
  if (tooLarge([lab, inst])) return;
  const extra = { label_png: await fileB64(lab) };
  if (inst) extra.inst_png = await fileB64(inst);
  request("upload", extra, { needsState: false });
}

function setTool(tool) {
  S.tool = tool;
  for (const b of document.querySelectorAll("[data-tool]")) b.setAttribute("aria-pressed", String(b.dataset.tool === tool));
}
function setClass(k) {
  S.cls = k;
  for (const b of $("palette").children) b.setAttribute("aria-selected", String(Number(b.dataset.class) === k));
}

function wire() {
  for (const b of document.querySelectorAll("[data-tool]")) b.onclick = () => setTool(b.dataset.tool);
  $("size").oninput = () => { $("size-value").textContent = $("size").value; };
  $("strength").oninput = () => { $("strength-value").textContent = $("strength").value; };
  $("undo").onclick = undo;
  $("redo").onclick = redo;
  const cv = $("label-canvas");
  cv.addEventListener("pointerdown", onDown);
  cv.addEventListener("pointermove", onMove);
  cv.addEventListener("pointerup", onUp);
  $("synth").addEventListener("click", (e) => {
    if (!S.latents) return;
    request("redraw_instance", { point: mapPoint(e, $("synth"), 12) });
  });
  $("load-example").onclick = () => request("example", { name: $("example").value }, { needsState: false });
  $("upload").onclick = upload;
  $("redraw-instance").onclick = () => needSelection() && request("redraw_instance", () => ({ instance: S.selected }));
  $("redraw-class").onclick = () => request("redraw_class", () => ({ class: S.selected >= 0 ? classOf(S.selected) : S.cls }));
  $("redraw-all").onclick = () => request("redraw_all");
  $("new-picture").onclick = () => { S.locked.clear(); request("random"); };
  $("lock").onclick = () => {
    if (!needSelection()) return;
    if (S.locked.has(S.selected)) S.locked.delete(S.selected); else S.locked.add(S.selected);
    render();
  };
  $("variations").onclick = () => {
    if (!needSelection()) return;
    const n = Math.min(S.info.max_variations, Math.max(1, parseInt($("var-count").value, 10) || 4));
    request("variations", () => ({ instance: S.selected, count: n }), { seeds: n });
  };
  $("ref-load").onclick = loadReference;
  $("ref-view").addEventListener("click", onReferenceClick);
  $("apply-style").onclick = () => {
    if (!S.reference) return say("open a reference image and its instance map first", true);
    if (!S.refPoint) return say("click the reference instance whose style to copy", true);
    if (!needSelection()) return;
    const strength = parseFloat($("strength").value), sample = $("ref-sample").checked;
    request("copy_style", () => ({ reference: refPayload(), ref_point: S.refPoint, instance: S.selected, strength, sample }));
  };
  $("export").onclick = exportZip;
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "INPUT" || e.target.tagName === "SELECT") return;
    const k = e.key.toLowerCase();
    if ((e.ctrlKey || e.metaKey) && k === "z") { e.preventDefault(); return e.shiftKey ? redo() : undo(); }
    if ((e.ctrlKey || e.metaKey) && k === "y") { e.preventDefault(); return redo(); }
    const tools = { b: "brush", l: "line", f: "fill", e: "eraser", i: "instance", m: "merge", p: "pick" };
    if (!e.ctrlKey && !e.metaKey && tools[k]) setTool(tools[k]);
  });
}

async function init() {
  wire();
  setTool("brush");
  try {
    S.info = await (await fetch("/api/info")).json();
  } catch (err) {
    return say(`cannot reach the server (${err.message})`, true);
  }
  const info = S.info;
  S.W = info.width; S.H = info.height;
  const side = Math.max(S.W, S.H);  // both views fit side by side: at most 360 px, whole multiples below that
  S.scale = side > 360 ? 360 / side : Math.floor(360 / side);
  colors = info.colors.map((c) => [1, 3, 5].map((i) => parseInt(c.slice(i, i + 2), 16)));
  const cv = $("label-canvas");
  cv.width = S.W; cv.height = S.H;
  for (const el of [cv, $("synth")]) { el.style.width = `${S.W * S.scale}px`; el.style.height = `${S.H * S.scale}px`; }
  $("model").textContent = `${info.title} · ${info.preset} · ${S.W}×${S.H}${info.encoder ? "" : " · no encoder"}`;
  $("palette").replaceChildren(...info.classes.map((name, k) => {
    const b = document.createElement("button");
    b.dataset.class = k;
    b.setAttribute("role", "option");
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = info.colors[k];
    b.append(sw, `${k} ${name}`);
    b.onclick = () => setClass(k);
    return b;
  }));
  setClass(0);
  $("example").replaceChildren(...info.examples.map((n) => new Option(n, n)));
  S.label = new Uint16Array(S.W * S.H);
  S.inst = new Uint16Array(S.W * S.H);
  $("apply-style").disabled = !info.encoder;
  render();
  say("ready: load an example or open your own maps");
  if (info.examples.length) request("example", { name: info.examples[0] }, { needsState: false });
}

init();
