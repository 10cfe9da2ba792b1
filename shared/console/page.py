"""The operator page: one HTML document with its CSS and JS inline (a Python module, so
Modal's add_local_python_source ships it: that copies .py files only)."""

HTML = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sdgate · operator</title>
<style>
  :root { --bg:#0f1115; --panel:#171a21; --line:#262b36; --text:#e6e8ee; --dim:#9aa3b2;
          --accent:#6ea8fe; --ok:#4ade80; --bad:#f87171; --warn:#fbbf24; }
  * { box-sizing: border-box; }
  body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
         background:var(--bg); color:var(--text); }
  header { display:flex; align-items:center; gap:16px; padding:12px 20px;
           border-bottom:1px solid var(--line); background:var(--panel); }
  header h1 { font-size:16px; margin:0; letter-spacing:.02em; }
  header .sp { flex:1; }
  main { display:grid; grid-template-columns: minmax(320px, 460px) 1fr; gap:16px;
         padding:16px 20px; }
  section { background:var(--panel); border:1px solid var(--line); border-radius:8px;
            padding:14px; }
  section h2 { font-size:13px; text-transform:uppercase; letter-spacing:.08em; color:var(--dim);
               margin:0 0 10px; }
  label { display:block; color:var(--dim); font-size:12px; margin:8px 0 3px; }
  input, select, textarea, button { font:inherit; color:var(--text); background:#0c0e12;
         border:1px solid var(--line); border-radius:6px; padding:6px 8px; }
  textarea { width:100%; min-height:64px; resize:vertical; }
  .row { display:flex; gap:8px; } .row > * { flex:1; }
  button { background:var(--accent); color:#08101f; border:0; font-weight:600; cursor:pointer;
           padding:8px 14px; }
  button:disabled { opacity:.5; cursor:wait; }
  .bar { height:6px; background:#0c0e12; border-radius:3px; overflow:hidden; margin:10px 0 4px; }
  .bar > div { height:100%; width:0; background:var(--accent); transition:width .2s; }
  #result { display:block; width:256px; height:256px; image-rendering:pixelated; margin-top:10px;
            border:1px solid var(--line); border-radius:6px; background:#0c0e12;
            object-fit:contain; }
  pre { background:#0c0e12; border:1px solid var(--line); border-radius:6px; padding:8px;
        overflow:auto; font-size:12px; margin:4px 0 0; white-space:pre-wrap; word-break:break-all; }
  .tabs button { background:transparent; color:var(--dim); border:1px solid var(--line);
                 padding:3px 9px; font-weight:500; }
  .tabs button.on { color:var(--text); border-color:var(--accent); }
  table { width:100%; border-collapse:collapse; font-size:12px; }
  th, td { text-align:left; padding:5px 6px; border-bottom:1px solid var(--line);
           white-space:nowrap; }
  th { color:var(--dim); font-weight:500; }
  .ok { color:var(--ok); } .failed { color:var(--bad); } .refused { color:var(--warn); }
  .interrupted, .running { color:var(--dim); } .revoked { color:var(--bad); }
  .note { color:var(--dim); font-size:12px; }
  .stack { display:grid; gap:16px; align-content:start; }
  #error { color:var(--bad); font-size:12px; min-height:1em; }
  canvas { width:100%; height:160px; display:block; }
  [hidden] { display:none !important; }
</style>
</head>
<body>
<header>
  <h1>sdgate</h1><span class="note" id="version"></span><span class="sp"></span>
  <label for="key" style="margin:0">API key</label>
  <input id="key" type="password" placeholder="sdg_… (empty on an open server)" size="34"
         autocomplete="off">
  <button id="save-key" type="button">Use key</button>
</header>
<main>
  <div class="stack">
    <section id="playground">
      <h2>Playground</h2>
      <label for="prompt">Prompt</label>
      <textarea id="prompt" placeholder="a lighthouse at dusk, oil painting"></textarea>
      <div class="row">
        <div><label for="model">Model</label><select id="model"></select></div>
        <div><label for="size">Size</label>
          <select id="size">
            <option>64x64</option><option>256x256</option><option selected>512x512</option>
            <option>768x768</option><option>1024x1024</option><option>768x512</option>
            <option>512x768</option>
          </select></div>
        <div><label for="steps">Steps</label><input id="steps" type="number" min="1" max="150"
             value="20"></div>
      </div>
      <div style="margin-top:12px"><button id="generate" type="button">Generate</button></div>
      <div class="bar"><div id="progress-bar"></div></div>
      <div class="note" id="progress">idle</div>
      <div id="error"></div>
      <img id="result" alt="generated image" hidden>
      <div class="note" id="result-info"></div>
    </section>
    <section>
      <h2>The same request, per API shape</h2>
      <div class="tabs" id="shape-tabs"></div>
      <pre id="curl"></pre>
    </section>
  </div>
  <div class="stack">
    <section>
      <h2>Recent jobs <span class="note" id="jobs-note"></span></h2>
      <table><thead><tr><th>started (UTC)</th><th>shape</th><th>route</th><th>model</th>
        <th>images</th><th>status</th><th>GPU s</th><th>request id</th></tr></thead>
        <tbody id="jobs"></tbody></table>
    </section>
    <section id="admin" hidden>
      <h2>Usage, all keys (admin)</h2>
      <canvas id="chart" width="900" height="160"></canvas>
      <div class="note" id="chart-note"></div>
      <h2 style="margin-top:14px">Keys</h2>
      <table><thead><tr><th>id</th><th>name</th><th>status</th><th>scopes</th><th>limits</th>
        <th>generations</th><th>images</th><th>GPU s</th></tr></thead>
        <tbody id="keys"></tbody></table>
    </section>
  </div>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const origin = location.origin;
let key = localStorage.getItem("sdgate-key") || "";
$("key").value = key;

function headers(json) {
  const h = json ? {"Content-Type": "application/json"} : {};
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}
async function api(path, opts = {}) {
  const r = await fetch(path, {...opts,
                               headers: {...headers(!!opts.body), ...(opts.headers || {})}});
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  return {ok: r.ok, status: r.status, body, rid: r.headers.get("X-Request-ID")};
}
function message(res) {
  const b = res.body || {};
  const m = (b.error && b.error.message) || b.detail || b.message || b.errors || "";
  return `${res.status}: ${typeof m === "string" ? m : JSON.stringify(m)}`;
}
function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  if (cls) td.className = cls;
  tr.appendChild(td);
}

// -- the playground: A1111 txt2img, progress polled by task id ---------------------------------
function form() {
  const [w, h] = $("size").value.split("x").map(Number);
  return {prompt: $("prompt").value, model: $("model").value, width: w, height: h,
          steps: Math.max(1, parseInt($("steps").value || "20", 10))};
}
async function generate() {
  const f = form();
  const task = "op-" + Math.random().toString(16).slice(2, 14);
  $("generate").disabled = true; $("error").textContent = "";
  $("progress").textContent = "queued"; $("progress-bar").style.width = "0";
  let done = false;
  const poll = async () => {
    while (!done) {
      const p = await api("/sdapi/v1/progress?id_task=" + task);
      if (done) break;
      if (p.ok && p.body) {
        const s = p.body.state || {};
        const pct = Math.round((p.body.progress || 0) * 100);
        $("progress-bar").style.width = pct + "%";
        if (s.sampling_steps) $("progress").textContent =
          `step ${s.sampling_step} / ${s.sampling_steps} · ${pct}%`;
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  };
  poll();
  const payload = {prompt: f.prompt, width: f.width, height: f.height, steps: f.steps,
                   force_task_id: task, send_images: true, save_images: false};
  if (f.model) payload.override_settings = {sd_model_checkpoint: f.model};
  const t0 = performance.now();
  const res = await api("/sdapi/v1/txt2img", {method: "POST", body: JSON.stringify(payload)});
  done = true;
  $("generate").disabled = false;
  if (!res.ok || !res.body || !res.body.images || !res.body.images.length) {
    $("progress").textContent = "failed";
    $("error").textContent = message(res) + (res.rid ? ` (request ${res.rid})` : "");
    refresh();
    return;
  }
  $("progress-bar").style.width = "100%";
  $("progress").textContent = `done in ${((performance.now() - t0) / 1000).toFixed(2)} s`;
  const img = $("result");
  img.src = "data:image/png;base64," + res.body.images[0];
  img.hidden = false;
  let info = {};
  try { info = JSON.parse(res.body.info || "{}"); } catch (e) { info = {}; }
  $("result-info").textContent = `seed ${info.seed ?? "?"} · ${f.width}x${f.height} · ` +
    `${f.steps} steps · ${info.sd_model_name || f.model || "default model"} · request ${res.rid}`;
  refresh();
}

// -- the equivalent curl for each API shape ------------------------------------------------------
const AUTH = `-H "Authorization: Bearer $SDGATE_KEY"`;
function curlJson(path, body, auth = true) {
  return `curl ${origin}${path}${auth ? " " + AUTH : ""} \\\n` +
    `  -H 'Content-Type: application/json' \\\n  -d '${JSON.stringify(body)
      .replace('"$SDGATE_KEY"', `"'"$SDGATE_KEY"'"`)}'`;  // the shell fills the key in
}
const withModel = (body, f, name) => (f.model ? {...body, [name]: f.model} : body);
const SHAPES = {
  "A1111": (f) => curlJson("/sdapi/v1/txt2img", f.model ? {
    prompt: f.prompt, width: f.width, height: f.height, steps: f.steps,
    override_settings: {sd_model_checkpoint: f.model}}
    : {prompt: f.prompt, width: f.width, height: f.height, steps: f.steps}),
  "OpenAI": (f) => curlJson("/v1/images/generations", withModel(
    {prompt: f.prompt, size: `${f.width}x${f.height}`, n: 1, response_format: "url"}, f, "model")),
  // v6 names its model; v3 takes the server's default
  "ModelsLab": (f) => curlJson(f.model ? "/api/v6/images/text2img" : "/api/v3/text2img",
    withModel({key: "$SDGATE_KEY", prompt: f.prompt, width: String(f.width),
               height: String(f.height), samples: "1", num_inference_steps: String(f.steps)},
              f, "model_id"), false),
  "APIGPT draw": (f) => curlJson("/v1/draw", withModel(
    {prompt: f.prompt, size: "1:1", quantity: 1}, f, "model")),
  "Form": (f) => `curl ${origin}/txt2img ${AUTH} \\\n  -F prompt=${JSON.stringify(f.prompt)} ` +
    `-F width=${f.width} -F height=${f.height} -F num_inference_steps=${f.steps}`,
};
let shape = "A1111";
function renderCurl() {
  $("curl").textContent = SHAPES[shape](form());
  for (const b of $("shape-tabs").children) b.classList.toggle("on", b.textContent === shape);
}
for (const name of Object.keys(SHAPES)) {
  const b = document.createElement("button");
  b.type = "button"; b.textContent = name;
  b.onclick = () => { shape = name; renderCurl(); };
  $("shape-tabs").appendChild(b);
}

// -- recent jobs, and keys + usage for admin keys ---------------------------------------------
async function refresh() {
  const jobs = await api("/v1/usage?limit=15");
  const tbody = $("jobs"); tbody.textContent = "";
  if (!jobs.ok) {
    $("jobs-note").textContent = jobs.status === 404 ? "· metering is off (no SDGATE_DATABASE_URL)"
      : "· " + message(jobs);
  } else {
    const t = jobs.body.totals;
    $("jobs-note").textContent = `· ${jobs.body.key_id === null ? "all keys" : "this key"}: ` +
      `${t.generations} generations, ${t.images} images, ${t.gpu_seconds} GPU s`;
    for (const r of jobs.body.data) {
      const tr = document.createElement("tr");
      cell(tr, (r.started_at || "").replace("T", " ").slice(0, 19));
      cell(tr, r.shape); cell(tr, r.route); cell(tr, r.model); cell(tr, r.images);
      cell(tr, r.status, r.status); cell(tr, (r.gpu_seconds || 0).toFixed(2));
      cell(tr, r.request_id);
      tbody.appendChild(tr);
    }
  }
  const keys = await api("/v1/admin/keys");
  $("admin").hidden = !keys.ok;
  if (!keys.ok) return;
  const all = await api("/v1/usage?limit=1000");
  const per = {};
  for (const r of (all.ok ? all.body.data : [])) {
    const p = per[r.key_id] = per[r.key_id] || {g: 0, i: 0, s: 0};
    p.g += 1; p.s += r.gpu_seconds || 0; if (r.status === "ok") p.i += r.images;
  }
  const kb = $("keys"); kb.textContent = "";
  for (const k of keys.body.data) {
    const tr = document.createElement("tr");
    const limits = ["rpm", "max_concurrent", "quota_images", "quota_gpu_seconds"]
      .filter((n) => k[n] != null).map((n) => `${n}=${k[n]}`).join(" ");
    const p = per[k.id] || {g: 0, i: 0, s: 0};
    cell(tr, k.id); cell(tr, k.name); cell(tr, k.status, k.status);
    cell(tr, k.scopes.join(",") || "all shapes");
    const quota = k.quota_images != null || k.quota_gpu_seconds != null;
    cell(tr, limits ? limits + (quota ? " / " + k.quota_period : "") : "none");
    cell(tr, p.g); cell(tr, p.i); cell(tr, p.s.toFixed(2));
    kb.appendChild(tr);
  }
  drawChart(all.ok ? all.body.daily : []);
}
function drawChart(days) {
  const c = $("chart"), g = c.getContext("2d");
  const W = c.width, H = c.height, pad = 28;
  g.clearRect(0, 0, W, H);
  g.fillStyle = "#9aa3b2"; g.font = "12px system-ui";
  if (!days.length) {
    g.fillText("no usage yet", pad, H / 2);
    $("chart-note").textContent = "";
    return;
  }
  const shown = days.slice(-30), max = Math.max(1, ...shown.map((d) => d.images));
  const bw = Math.min(48, (W - 2 * pad) / shown.length - 6);
  shown.forEach((d, i) => {
    const x = pad + i * (bw + 6), h = (H - 2 * pad) * d.images / max;
    g.fillStyle = "#6ea8fe"; g.fillRect(x, H - pad - h, bw, h);
    g.fillStyle = "#e6e8ee"; g.fillText(String(d.images), x, H - pad - h - 4);
    g.fillStyle = "#9aa3b2"; g.fillText(d.day.slice(5), x, H - 8);
  });
  $("chart-note").textContent = `images per UTC day (last ${shown.length} days with usage); ` +
    `GPU s: ${shown.map((d) => d.gpu_seconds.toFixed(1)).join(" · ")}`;
}

async function loadModels() {
  const m = await api("/sdapi/v1/sd-models");
  const sel = $("model"); sel.textContent = "";
  const none = document.createElement("option");
  none.value = ""; none.textContent = "server default";
  sel.appendChild(none);
  if (m.ok && Array.isArray(m.body)) for (const x of m.body) {
    const o = document.createElement("option");
    o.value = x.model_name; o.textContent = x.model_name;
    sel.appendChild(o);
  }
}
async function start() {
  const h = await api("/health");
  if (h.ok) $("version").textContent = "v" + h.body.version;
  await loadModels();
  renderCurl();
  await refresh();
}
$("save-key").onclick = () => {
  key = $("key").value.trim();
  localStorage.setItem("sdgate-key", key);
  start();
};
$("generate").onclick = generate;
for (const id of ["prompt", "model", "size", "steps"]) $(id).addEventListener("input", renderCurl);
start();
</script>
</body>
</html>
"""
