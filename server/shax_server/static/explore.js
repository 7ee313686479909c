// shax stage explorer: paste IR text, see every pipeline stage, its graph and its numbers.
// Dependency-free; every piece of text from the server or the user goes in via textContent.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const state = { samples: {}, primitives: new Set(), result: null };

// ---- syntax highlighting (the IR's tokens: see docs/ir.md)

const TOKEN = /(--[^\n]*)|\b(def|let|in)\b|\b((?:f32|f64|bool)\[[^\]]*\])|([-+]?(?:\d+\.\d*(?:[eE][-+]?\d+)?|\d+(?:[eE][-+]?\d+)?|\.\d+)|\b(?:inf|nan)\b)|([A-Za-z_][A-Za-z0-9_']*)/g;

// the name a line binds: an equation (`let x3 :: f32[2] = ...`) or a parameter
const BINDING = /^\s*(?:def\s+\w+\(|let\s+)?\s*([A-Za-z_][A-Za-z0-9_']*)\s*(?:::|=)/;

function span(cls, text) {
  const s = document.createElement("span");
  s.className = cls;
  s.textContent = text;
  return s;
}

// Highlighted IR text as nodes appended to `target`; the error's line (1-based) is marked, and
// the character at its column (1-based) underlined.
// `lineMark(line)`, if given, returns [class, name] for a line's row or null (the stage panes
// mark each binding with its part and the name it binds).
function highlight(target, text, errorLine, errorColumn, lineMark) {
  target.textContent = "";
  text.split("\n").forEach((line, i) => {
    const isError = errorLine === i + 1;
    const mark = isError ? ["err-line", null] : lineMark && lineMark(line);
    const row = mark ? span(mark[0], "") : document.createDocumentFragment();
    if (mark && mark[1]) row.dataset.var = mark[1];
    const at = isError && errorColumn ? errorColumn - 1 : -1;
    // text from offset `start` with class `cls`, the error column cut out and underlined
    const push = (piece, cls, start) => {
      if (at >= start && at < start + piece.length) {
        if (at > start) push(piece.slice(0, at - start), cls, start);
        row.appendChild(span(`${cls || ""} err-mark`.trim(), piece[at - start]));
        if (at + 1 < start + piece.length) push(piece.slice(at - start + 1), cls, at + 1);
        return;
      }
      row.appendChild(cls ? span(cls, piece) : document.createTextNode(piece));
    };
    let last = 0;
    for (const m of line.matchAll(TOKEN)) {
      if (m.index > last) push(line.slice(last, m.index), null, last);
      const [tok, comment, kw, type, num, name] = m;
      let cls = null;
      if (comment) cls = "tok-comment";
      else if (kw) cls = "tok-kw";
      else if (type) cls = "tok-type";
      else if (num) cls = "tok-num";
      else if (name && state.primitives.has(name)) cls = "tok-prim";
      push(tok, cls, m.index);
      last = m.index + tok.length;
    }
    if (last < line.length) push(line.slice(last), null, last);
    target.appendChild(row);
    target.appendChild(document.createTextNode("\n"));
  });
}

function refreshEditor(errorLine, errorColumn) {
  highlight($("editor-highlight"), $("editor").value + " ", errorLine, errorColumn);
  $("editor-highlight").scrollTop = $("editor").scrollTop;
  $("editor-highlight").scrollLeft = $("editor").scrollLeft;
}

// ---- requests

async function call(method, url, body) {
  const opts = { method, headers: { accept: "application/json" } };
  if (body !== undefined) {
    opts.headers["content-type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const key = sessionStorage.getItem("shax-api-key");
  if (key) opts.headers["x-api-key"] = key;
  const resp = await fetch(url, opts);
  const doc = await resp.json().catch(() => ({ detail: resp.statusText }));
  if (resp.status === 401) {
    const given = window.prompt("This server needs an API key (X-API-Key):");
    if (given) { sessionStorage.setItem("shax-api-key", given); return call(method, url, body); }
  }
  if (!resp.ok) throw Object.assign(new Error(doc.detail || resp.statusText), { problem: doc });
  return doc;
}

function parseField(id) {
  const text = $(id).value.trim();
  if (!text) return undefined;
  try {
    return JSON.parse(text);
  } catch (e) {
    throw Object.assign(new Error(`${id}: not JSON (${e.message})`), { problem: { field: id } });
  }
}

function session() {
  const doc = { program: $("editor").value, rewrites: $("rewrites").value };
  for (const id of ["inputs", "tangents", "cotangents", "wrt"]) {
    const v = parseField(id);
    if (v !== undefined) doc[id] = v;
  }
  return doc;
}

function fill(doc) {
  $("editor").value = doc.program || "";
  const show = (v) => (v === undefined || v === null ? "" : JSON.stringify(v));
  $("inputs").value = show(doc.inputs);
  $("tangents").value = show(doc.tangents);
  $("cotangents").value = show(doc.cotangents);
  $("wrt").value = show(doc.wrt);
  $("rewrites").value = doc.rewrites || "shax";
  refreshEditor();
}

// ---- rendering

function showError(err) {
  const p = err.problem || {};
  const box = $("error");
  const msg = err.message;
  const where = p.line && !msg.startsWith("line ") ? `line ${p.line}, column ${p.column}: ` : "";
  box.textContent = `${p.title ? p.title + ": " : ""}${where}${msg}`;
  box.dataset.line = p.line || "";
  box.dataset.column = p.column || "";
  box.hidden = false;
  for (const id of ["numbers", "stages", "graph", "signature"]) $(id).classList.add("stale");
  refreshEditor(p.line, p.column);
  if (p.line) scrollEditorTo(p.line);
}

function scrollEditorTo(line) {
  const ed = $("editor");
  const lineHeight = parseFloat(getComputedStyle(ed).lineHeight) || 19;
  ed.scrollTop = Math.max(0, (line - 3) * lineHeight);
  $("editor-highlight").scrollTop = ed.scrollTop;
}

function clearError() {
  for (const id of ["numbers", "stages", "graph", "signature"]) $(id).classList.remove("stale");
  $("error").hidden = true;
  $("error").textContent = "";
  refreshEditor();
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function renderStages(result) {
  const root = $("stages");
  root.textContent = "";
  const pick = $("graph-stage");
  const chosen = pick.value || "vjp";
  pick.textContent = "";
  for (const st of result.stages) {
    const pane = el("article", "stage");
    pane.dataset.stage = st.name;
    const head = el("header");
    head.appendChild(el("span", "name", st.name));
    head.appendChild(el("span", "count", `${st.equations} eqns`));
    const p = st.parts;
    head.appendChild(el("span", "parts", `${p.primal} primal · ${p.residual} residual · ${p.linear} linear`));
    const btn = el("button", null, "graph");
    btn.type = "button";
    btn.addEventListener("click", () => { pick.value = st.name; drawGraph(); });
    head.appendChild(btn);
    head.title = st.title;
    pane.appendChild(head);
    pane.appendChild(el("div", "what", st.title));
    const pre = el("pre");
    const part = {};
    if (st.graph) for (const node of st.graph.nodes) part[node.id] = node.part;
    let depth = 0; // inside a loop's or a branch's { body }, names are the body's own
    highlight(pre, st.text, null, null, (line) => {
      const outside = depth === 0;
      depth += (line.match(/{/g) || []).length - (line.match(/}/g) || []).length;
      const m = outside && BINDING.exec(line);
      return m && part[m[1]] ? [`part-${part[m[1]]}`, m[1]] : null;
    });
    pane.appendChild(pre);
    root.appendChild(pane);
    const opt = el("option", null, `${st.name} (${st.equations} eqns)`);
    opt.value = st.name;
    pick.appendChild(opt);
  }
  pick.value = result.stages.some((s) => s.name === chosen) ? chosen : "vjp";
  const sig = result.signature;
  $("signature").textContent = `${result.name}(${sig.inputs.map((v) => `${v.name} :: ${v.type}`).join(", ")})`
    + ` -> [${sig.outputs.map((v) => v.type).join(", ")}]; wrt [${result.wrt.join(", ")}]`;
}

function renderNumbers(result) {
  const root = $("numbers");
  root.textContent = "";
  const n = result.numbers || {};
  if (n.problem) {
    const box = el("div", "error", `${n.problem.title}: ${n.problem.detail}`);
    box.id = "numbers-error";
    root.appendChild(box);
    root.appendChild(el("p", "hint", "The stages below are the program's; fix the inputs to see its numbers."));
    return;
  }
  if (!n.f) {
    root.appendChild(el("p", "hint", "Type inputs (a JSON list, one per parameter) to see outputs and gradients."));
    return;
  }
  const groups = [
    ["f", "f(x):", "outputs, from the linearized primal"],
    ["df", "df(dx):", "the linear map at the tangents"],
    ["dft", "dft(ct):", "the transposed map at the cotangents: the gradients"],
    ["vjp", "VJP:", "the zipped program: outputs and gradients in one"],
  ];
  for (const [key, label, what] of groups) {
    const h = el("h3", null, label + " ");
    h.appendChild(el("span", "hint", what));
    root.appendChild(h);
    const pre = el("pre");
    pre.dataset.numbers = key;
    pre.textContent = n[key].map((t) => `${t.name} = ${t.text}`).join("\n");
    root.appendChild(pre);
  }
  const c = n.dot_check;
  root.appendChild(el("div", "check",
    `dot-product check: <df(dx), ct> = ${c.df_dot_ct.toPrecision(8)}, <dx, dft(ct)> = ${c.dx_dot_dft.toPrecision(8)}`));
}

// A layered drawing: the server places each node in a layer and a position within it.
function drawGraph() {
  const root = $("graph");
  root.textContent = "";
  const result = state.result;
  if (!result) return;
  const st = result.stages.find((s) => s.name === $("graph-stage").value);
  if (!st || !st.graph) {
    root.appendChild(el("p", "hint", "This stage is too large to draw."));
    return;
  }
  const g = st.graph;
  const W = 150, H = 26, GX = 18, GY = 34, PAD = 16;
  const width = {};
  for (const node of g.nodes) width[node.layer] = Math.max(width[node.layer] || 0, node.pos + 1);
  const cols = Math.max(...Object.values(width));
  const svgW = PAD * 2 + cols * (W + GX);
  const svgH = PAD * 2 + g.layers * (H + GY);
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("width", svgW);
  svg.setAttribute("height", svgH);
  svg.setAttribute("viewBox", `0 0 ${svgW} ${svgH}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `dataflow graph of the ${st.name} stage`);
  svg.dataset.stage = st.name;
  const x = (n) => PAD + (cols - width[n.layer]) * (W + GX) / 2 + n.pos * (W + GX);
  const y = (n) => PAD + n.layer * (H + GY);
  const edges = document.createElementNS(SVG, "g");
  for (const [s, d] of g.edges) {
    const a = g.nodes[s], b = g.nodes[d];
    const x1 = x(a) + W / 2, y1 = y(a) + H, x2 = x(b) + W / 2, y2 = y(b);
    const path = document.createElementNS(SVG, "path");
    const my = (y1 + y2) / 2;
    path.setAttribute("d", `M${x1},${y1} C${x1},${my} ${x2},${my} ${x2},${y2}`);
    path.setAttribute("class", `edge ${b.part}`);
    edges.appendChild(path);
  }
  svg.appendChild(edges);
  for (const node of g.nodes) {
    const grp = document.createElementNS(SVG, "g");
    grp.setAttribute("class", `node ${node.part}${node.out !== undefined ? " out" : ""}`);
    grp.dataset.id = node.id;
    grp.dataset.part = node.part;
    let shape;
    if (node.kind === "param") {
      shape = document.createElementNS(SVG, "ellipse");
      shape.setAttribute("cx", x(node) + W / 2);
      shape.setAttribute("cy", y(node) + H / 2);
      shape.setAttribute("rx", W / 2);
      shape.setAttribute("ry", H / 2);
    } else {
      shape = document.createElementNS(SVG, "rect");
      shape.setAttribute("x", x(node));
      shape.setAttribute("y", y(node));
      shape.setAttribute("width", W);
      shape.setAttribute("height", H);
      shape.setAttribute("rx", 4);
    }
    grp.appendChild(shape);
    const title = document.createElementNS(SVG, "title");
    title.textContent = `${node.label} :: ${node.type} (${node.part}${node.out !== undefined ? `, output ${node.out}` : ""})`;
    grp.appendChild(title);
    const text = document.createElementNS(SVG, "text");
    text.setAttribute("x", x(node) + W / 2);
    text.setAttribute("y", y(node) + H / 2 + 4);
    text.setAttribute("text-anchor", "middle");
    text.textContent = node.label.length > 22 ? node.label.slice(0, 21) + "…" : node.label;
    grp.appendChild(text);
    grp.addEventListener("click", () => showBinding(st.name, node.id));
    svg.appendChild(grp);
  }
  svg.classList.toggle("fit", $("graph-fit").checked);
  root.appendChild(svg);
}

// Scroll a stage's text to the line binding `name` and flash it (a click on a graph node).
function showBinding(stage, name) {
  const pre = document.querySelector(`.stage[data-stage="${stage}"] pre`);
  if (!pre) return;
  for (const row of pre.querySelectorAll("[data-var]")) {
    if (row.dataset.var !== name) continue;
    pre.scrollTop = row.offsetTop - pre.offsetTop - pre.clientHeight / 3;
    row.closest(".stage").scrollIntoView({ block: "nearest", inline: "nearest" });
    row.classList.remove("flash");
    void row.offsetWidth; // restart the animation
    row.classList.add("flash");
    return;
  }
}

// ---- actions

// Nested arrays of ones (true for bool) of an IR type such as "f32[2, 3]".
function onesOf(type) {
  const m = /^(\w+)\[([^\]]*)\]$/.exec(type);
  const one = m && m[1] === "bool" ? true : 1;
  const dims = m && m[2].trim() ? m[2].split(",").map((d) => parseInt(d, 10)) : [];
  const build = (k) => (k === dims.length ? one : Array.from({ length: dims[k] }, () => build(k + 1)));
  return build(0);
}

function fillInputs() {
  if (!state.result) return;
  $("inputs").value = JSON.stringify(state.result.signature.inputs.map((v) => onesOf(v.type)));
  $("tangents").value = "";
  $("cotangents").value = "";
  $("wrt").value = "";
  run();
}

async function run() {
  let doc;
  try {
    doc = session();
  } catch (err) {
    showError(err);
    return;
  }
  $("status").textContent = "running…";
  const t0 = performance.now();
  try {
    const result = await call("POST", "/v1/explore", doc);
    state.result = result;
    $("fill-inputs").disabled = false;
    clearError();
    renderStages(result);
    renderNumbers(result);
    drawGraph();
    $("status").textContent = `${result.stages.length} stages in ${Math.round(performance.now() - t0)} ms`;
    document.body.dataset.ready = "1";
  } catch (err) {
    showError(err);
    $("status").textContent = "error";
    document.body.dataset.ready = "error";
  }
}

async function share() {
  try {
    const { id, url } = await call("POST", "/v1/explore/links", session());
    $("share-url").value = url;
    history.replaceState(null, "", `/explore/${id}`);
    $("status").textContent = "link ready";
  } catch (err) {
    showError(err);
  }
}

function chooseSample(name) {
  const s = state.samples[name];
  if (!s) return;
  fill(s);
  run();
}

async function start() {
  const { samples, primitives } = await call("GET", "/v1/explore/samples");
  state.samples = samples;
  state.primitives = new Set(primitives);
  for (const [name, s] of Object.entries(samples)) {
    const opt = el("option", null, `${name}: ${s.title}`);
    opt.value = name;
    $("sample").appendChild(opt);
  }
  $("sample").addEventListener("change", (e) => chooseSample(e.target.value));
  $("run").addEventListener("click", run);
  $("share").addEventListener("click", share);
  $("fill-inputs").addEventListener("click", fillInputs);
  $("graph-stage").addEventListener("change", drawGraph);
  $("graph-fit").addEventListener("change", () => {
    const svg = document.querySelector("#graph svg");
    if (svg) svg.classList.toggle("fit", $("graph-fit").checked);
  });
  $("rewrites").addEventListener("change", run);
  const ed = $("editor");
  ed.addEventListener("input", () => refreshEditor());
  ed.addEventListener("scroll", () => {
    $("editor-highlight").scrollTop = ed.scrollTop;
    $("editor-highlight").scrollLeft = ed.scrollLeft;
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); run(); }
  });
  const linkId = document.body.dataset.linkId;
  if (linkId) {
    try {
      fill(await call("GET", `/v1/explore/links/${linkId}`));
      $("sample").value = "";
      $("share-url").value = location.href;
      return run();
    } catch (err) {
      showError(err);
      document.body.dataset.ready = "error";
      return;
    }
  }
  chooseSample("medium");
}

start();
