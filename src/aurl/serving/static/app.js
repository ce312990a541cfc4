// Aurl's page: settings -> POST /v1/generate/stream (Server-Sent Events over fetch) -> a piano
// roll that grows as notes arrive -> play (Web Audio synth), download MIDI / MusicXML.
// No libraries: it talks only to the public HTTP API and works offline.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { notes: [], now: 0, bpm: 96, total: 0, result: null, busy: false, audio: null, playStart: 0 };
window.aurl = state; // read by the browser test

// ---------------------------------------------------------------------------------------------
// settings

const bars = $("bars"), temp = $("temperature");
const showBars = () => { $("bars-out").textContent = `${bars.value} bar${bars.value === "1" ? "" : "s"}`; };
const showTemp = () => { $("temp-out").textContent = Number(temp.value).toFixed(2); };
bars.addEventListener("input", showBars);
temp.addEventListener("input", showTemp);
$("dice").addEventListener("click", () => { $("seed").value = Math.floor(Math.random() * 1e6); });
showBars(); showTemp();

fetch("/health").then((r) => r.json()).then((h) => {
  const size = h.parameters >= 1e5 ? `${(h.parameters / 1e6).toFixed(1)}M` : h.parameters.toLocaleString("en");
  $("model").textContent = `${h.name} · ${size} parameters · ${h.batching ? `batching ${h.max_batch}` : "serial"}`;
}).catch(() => { $("model").textContent = "server unreachable"; });

function fileBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(new Error(`cannot read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

function setStatus(text, error = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", error);
}

// ---------------------------------------------------------------------------------------------
// generate (SSE over fetch: EventSource cannot POST)

async function generate() {
  if (state.busy) return;
  stop();
  state.busy = true;
  state.notes = []; state.now = 0; state.total = 0; state.result = null;
  $("generate").disabled = true;
  $("play").disabled = true;
  for (const id of ["dl-midi", "dl-xml"]) $(id).classList.add("disabled");
  $("empty").classList.add("hidden");
  setStatus("Composing…");
  const body = {
    bars: Number(bars.value), temperature: Number(temp.value), seed: Number($("seed").value) || 0,
  };
  if ($("key").value) body.key = $("key").value;
  const t0 = performance.now();
  try {
    const file = $("prompt").files[0];
    if (file) body.prompt = await fileBase64(file);
    const res = await fetch("/v1/generate/stream", {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
    });
    if (!res.ok) throw new Error(await errorText(res));
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        handle(buffer.slice(0, cut));
        buffer = buffer.slice(cut + 2);
      }
    }
    if (!state.result) throw new Error(state.error || "the stream ended early");
    const secs = ((performance.now() - t0) / 1000).toFixed(1);
    setStatus(`${state.result.notes.length} notes · ${state.total.toFixed(1)} s of music · composed in ${secs} s · seed ${state.result.seed}`);
  } catch (err) {
    setStatus(`Could not generate: ${err.message}`, true);
  } finally {
    state.busy = false;
    $("generate").disabled = false;
    draw();
  }
}

async function errorText(res) {
  try {
    const j = await res.json();
    if (j.error) return j.error;
    if (typeof j.detail === "string") return j.detail;
    return JSON.stringify(j.detail);
  } catch (_) {
    return `HTTP ${res.status}`;
  }
}

function handle(block) {
  let event = "message", data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event: ")) event = line.slice(7);
    else if (line.startsWith("data: ")) data += line.slice(6);
  }
  if (!data) return;
  const d = JSON.parse(data);
  if (event === "start") {
    state.bpm = d.bpm;
  } else if (event === "note") {
    state.notes.push({ pitch: d.pitch, start: d.start, end: d.end, program: d.program, velocity: 80 });
    setStatus(`Composing… ${state.notes.length} notes`);
  } else if (event === "note_off") {
    for (let i = state.notes.length - 1; i >= 0; i--) {
      const n = state.notes[i];
      if (n.pitch === d.pitch && n.program === d.program && n.end === null) { n.end = d.end; break; }
    }
  } else if (event === "time") {
    state.now = d.seconds;
  } else if (event === "done") {
    finish(d);
  } else if (event === "error") {
    state.error = d.detail;
  }
  scheduleDraw();
}

function finish(d) {
  state.result = d;
  state.notes = d.notes.map((n) => ({ ...n }));
  state.now = state.total = d.notes.reduce((m, n) => Math.max(m, n.end), 0);
  const midi = Uint8Array.from(atob(d.midi), (c) => c.charCodeAt(0));
  link("dl-midi", new Blob([midi], { type: "audio/midi" }), `aurl-seed${d.seed}.mid`);
  if (d.musicxml) {
    link("dl-xml", new Blob([d.musicxml], { type: "application/vnd.recordare.musicxml+xml" }), `aurl-seed${d.seed}.musicxml`);
  }
  $("cli").textContent = d.reproduce;
  $("play").disabled = d.notes.length === 0;
}

function link(id, blob, name) {
  const a = $(id);
  if (a.href) URL.revokeObjectURL(a.href);
  a.href = URL.createObjectURL(blob);
  a.download = name;
  a.classList.remove("disabled");
}

// ---------------------------------------------------------------------------------------------
// piano roll

const canvas = $("roll");
let pending = false;
function scheduleDraw() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => { pending = false; draw(); });
}

const BLACK = new Set([1, 3, 6, 8, 10]);

function draw() {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  const css = getComputedStyle(document.documentElement);
  const col = (v) => css.getPropertyValue(v).trim();
  ctx.fillStyle = col("--roll-bg");
  ctx.fillRect(0, 0, w, h);
  const notes = state.notes;
  canvas.dataset.notes = String(notes.length);
  let lo = 55, hi = 79;
  if (notes.length) {
    lo = Math.min(...notes.map((n) => n.pitch)) - 2;
    hi = Math.max(...notes.map((n) => n.pitch)) + 2;
    if (hi - lo < 24) { const mid = (hi + lo) / 2; lo = Math.floor(mid - 12); hi = Math.ceil(mid + 12); }
  }
  const beat = 60 / state.bpm;
  const wanted = Number(bars.value) * 4 * beat;
  const span = Math.max(state.total, state.now, state.result ? 0 : wanted, 4 * beat);
  const left = 34, x = (t) => left + (t / span) * (w - left - 8);
  const rowH = h / (hi - lo + 1), y = (p) => h - (p - lo + 1) * rowH;
  for (let p = lo; p <= hi; p++) {                       // keyboard rows
    if (BLACK.has(((p % 12) + 12) % 12)) { ctx.fillStyle = col("--roll-black"); ctx.fillRect(left, y(p), w, rowH); }
    if (p % 12 === 0) {
      ctx.fillStyle = "#8891ad"; ctx.font = "11px system-ui"; ctx.fillText(`C${p / 12 - 1}`, 4, y(p) + rowH - 2);
    }
  }
  for (let b = 0, t = 0; t <= span; b++, t = b * beat) { // beat and bar lines
    ctx.fillStyle = b % 4 === 0 ? col("--roll-bar") : col("--roll-grid");
    ctx.fillRect(Math.round(x(t)), 0, 1, h);
  }
  for (const n of notes) {
    const end = n.end === null ? Math.max(state.now, n.start + beat / 8) : n.end;
    const hue = (20 + n.program * 37) % 360;
    const light = 55 + Math.round(((n.velocity || 80) / 127) * 12);
    ctx.fillStyle = `hsl(${hue} 85% ${light}%)`;
    const rx = x(n.start), rw = Math.max(2, x(end) - rx - 1), ry = y(n.pitch) + 1, rh = Math.max(2, rowH - 2);
    roundRect(ctx, rx, ry, rw, rh, Math.min(3, rh / 2));
  }
  if (state.audio) {                                     // playhead
    const t = state.audio.ctx.currentTime - state.playStart;
    ctx.fillStyle = "#fbbf24";
    ctx.fillRect(x(Math.max(0, t)), 0, 2, h);
  }
}

function roundRect(ctx, x, y, w, h, r) {
  ctx.beginPath();
  ctx.moveTo(x + r, y);
  ctx.arcTo(x + w, y, x + w, y + h, r);
  ctx.arcTo(x + w, y + h, x, y + h, r);
  ctx.arcTo(x, y + h, x, y, r);
  ctx.arcTo(x, y, x + w, y, r);
  ctx.fill();
}

window.addEventListener("resize", scheduleDraw);

// ---------------------------------------------------------------------------------------------
// playback: a small Web Audio synth (two detuned partials, piano-like decay)

function play() {
  if (state.audio) { stop(); return; }
  const AC = window.AudioContext || window.webkitAudioContext;
  const ctx = new AC();
  const master = ctx.createDynamicsCompressor();
  const gain = ctx.createGain();
  gain.gain.value = 0.5;
  master.connect(gain).connect(ctx.destination);
  const t0 = ctx.currentTime + 0.1;
  for (const n of state.notes) {
    const f = 440 * 2 ** ((n.pitch - 69) / 12);
    const start = t0 + n.start, end = t0 + Math.max(n.end, n.start + 0.05);
    const env = ctx.createGain();
    const peak = 0.12 * ((n.velocity || 80) / 127 + 0.3);
    env.gain.setValueAtTime(0, start);
    env.gain.linearRampToValueAtTime(peak, start + 0.01);
    env.gain.exponentialRampToValueAtTime(peak * 0.35, start + 0.4);
    env.gain.setValueAtTime(peak * 0.35, end);
    env.gain.exponentialRampToValueAtTime(0.0001, end + 0.12);
    env.connect(master);
    for (const [type, mult, amp] of [["triangle", 1, 1], ["sine", 2, 0.3]]) {
      const osc = ctx.createOscillator();
      const g = ctx.createGain();
      osc.type = type; osc.frequency.value = f * mult; g.gain.value = amp;
      osc.connect(g).connect(env);
      osc.start(start); osc.stop(end + 0.15);
    }
  }
  state.audio = { ctx };
  state.playStart = t0;
  $("play").textContent = "■ Stop";
  const last = Math.max(...state.notes.map((n) => n.end));
  const tick = () => {
    if (!state.audio || state.audio.ctx !== ctx) return;
    if (ctx.currentTime - t0 > last + 0.3) { stop(); return; }
    draw();
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}

function stop() {
  if (state.audio) { state.audio.ctx.close(); state.audio = null; }
  $("play").textContent = "▶ Play";
  draw();
}

$("generate").addEventListener("click", generate);
$("play").addEventListener("click", play);
draw();
