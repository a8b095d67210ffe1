// circushttpd: live updates, actions without reloading, and the charts.
// No library, nothing from the network but this console's own /events
// stream and its POST forms. Works with the Content-Security-Policy the
// server sends (no inline script or style anywhere).
"use strict";

(function () {
  const COLORS = { cpu: "#2563eb", mem: "#ea580c", grid: "#e5e7eb", text: "#6b7280" };
  const KEEP_SECONDS = 300;
  const series = new Map(); // "watcher" or "watcher/pid" -> [[t, cpu, mem], ...]
  let clockOffset = 0; // server time minus browser time, in seconds

  function serverNow() {
    return Date.now() / 1000 + clockOffset;
  }

  // -- notices -------------------------------------------------------------

  function notice(kind, text) {
    const box = document.getElementById("notice");
    if (!box) return;
    const line = document.createElement("p");
    line.className = "notice-" + kind;
    if (kind !== "ok") line.setAttribute("role", "alert");
    line.textContent = text;
    box.replaceChildren(line);
  }

  function setLive(state, text) {
    const live = document.getElementById("live");
    if (!live) return;
    live.dataset.state = state;
    live.textContent = text;
  }

  // -- actions ---------------------------------------------------------------

  document.addEventListener("submit", async function (event) {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.classList.contains("action")) return;
    event.preventDefault();
    const body = new URLSearchParams(new FormData(form));
    const buttons = form.querySelectorAll("button");
    buttons.forEach(function (b) { b.disabled = true; });
    try {
      // getAttribute: form.action would be any field named "action".
      const response = await fetch(form.getAttribute("action"), {
        method: "POST",
        body: body,
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
      let answer;
      try {
        answer = await response.json();
      } catch (err) {
        answer = { ok: false, message: "unexpected answer from the console (HTTP " + response.status + ")" };
      }
      notice(answer.ok ? "ok" : "refused", answer.message);
    } catch (err) {
      notice("refused", "the console did not answer: " + err.message);
    } finally {
      buttons.forEach(function (b) { b.disabled = false; });
    }
  });

  // -- charts ------------------------------------------------------------------

  function niceMax(value) {
    const steps = [1, 2, 5, 10, 20, 25, 50, 100, 200, 400, 800, 1600, 3200];
    for (const step of steps) if (value <= step) return step;
    return Math.ceil(value / 1000) * 1000;
  }

  function niceBytes(value) {
    let unit = 1024;
    while (unit * 1024 < value) unit *= 1024;
    for (const step of [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]) {
      if (value <= step * unit) return step * unit;
    }
    return value;
  }

  function humanSize(count) {
    if (count === null || count === undefined) return "–";
    for (const unit of ["B", "K", "M", "G"]) {
      if (count < 1024) return unit === "B" ? count.toFixed(0) + unit : count.toFixed(1) + unit;
      count /= 1024;
    }
    return count.toFixed(1) + "T";
  }

  // One line per measure: CPU % on the left axis, resident memory (bytes)
  // on the right one, each scaled to its own range.
  function drawLine(ctx, visible, index, x, y, width) {
    ctx.lineWidth = width;
    ctx.beginPath();
    let drawing = false;
    for (const p of visible) {
      if (p[index] === null || p[index] === undefined) { drawing = false; continue; }
      if (drawing) ctx.lineTo(x(p[0]), y(p[index]));
      else { ctx.moveTo(x(p[0]), y(p[index])); drawing = true; }
    }
    const only = visible.filter(function (p) { return p[index] !== null && p[index] !== undefined; });
    if (only.length === 1) ctx.arc(x(only[0][0]), y(only[0][index]), 1.5, 0, 2 * Math.PI);
    ctx.stroke();
  }

  function drawChart(canvas) {
    const points = series.get(canvas.dataset.chart) || [];
    const big = canvas.classList.contains("chart");
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || canvas.width;
    const height = canvas.clientHeight || canvas.height;
    if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
    if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const left = big ? 44 : 1, right = big ? 50 : 1, top = big ? 8 : 2, bottom = big ? 20 : 2;
    const plotW = width - left - right, plotH = height - top - bottom;
    const end = serverNow(), span = big ? KEEP_SECONDS : 120, start = end - span;
    const visible = points.filter(function (p) { return p[0] >= start; });
    let cpuHigh = 0, memHigh = 0;
    for (const p of visible) {
      if (p[1] !== null) cpuHigh = Math.max(cpuHigh, p[1]);
      if (p[3] !== null && p[3] !== undefined) memHigh = Math.max(memHigh, p[3]);
    }
    const cpuTop = niceMax(cpuHigh * 1.1 || 1), memTop = niceBytes(memHigh * 1.1 || 1024 * 1024);
    const x = function (t) { return left + ((t - start) / span) * plotW; };
    const yCpu = function (v) { return top + plotH - (v / cpuTop) * plotH; };
    const yMem = function (v) { return top + plotH - (v / memTop) * plotH; };
    if (big) {
      ctx.font = "11px system-ui, sans-serif";
      ctx.strokeStyle = COLORS.grid;
      ctx.lineWidth = 1;
      for (let i = 0; i <= 4; i++) {
        const yy = Math.round(top + plotH - (plotH / 4) * i) + 0.5;
        ctx.beginPath(); ctx.moveTo(left, yy); ctx.lineTo(width - right, yy); ctx.stroke();
        ctx.fillStyle = COLORS.cpu;
        ctx.textAlign = "left";
        ctx.fillText((cpuTop / 4) * i + " %", 2, yy + 4);
        ctx.fillStyle = COLORS.mem;
        ctx.textAlign = "right";
        ctx.fillText(humanSize((memTop / 4) * i), width - 2, yy + 4);
      }
      ctx.fillStyle = COLORS.text;
      ctx.textAlign = "center";
      for (let s = 60; s <= span; s += 60) ctx.fillText("-" + s / 60 + " min", x(end - s), height - 4);
      ctx.textAlign = "right";
      ctx.fillText("now", width - right, height - 4);
      ctx.textAlign = "left";
      if (!visible.length) ctx.fillText("waiting for statistics…", left + 8, top + 16);
    } else {
      ctx.strokeStyle = COLORS.grid;
      ctx.lineWidth = 1;
      ctx.strokeRect(0.5, 0.5, width - 1, height - 1);
    }
    ctx.strokeStyle = COLORS.mem;
    drawLine(ctx, visible, 3, x, yMem, big ? 2 : 1.5);
    ctx.strokeStyle = COLORS.cpu;
    drawLine(ctx, visible, 1, x, yCpu, big ? 2 : 1.5);
    canvas.dataset.points = String(visible.length);
  }

  function drawAll() {
    document.querySelectorAll("canvas[data-chart]").forEach(drawChart);
  }

  function drawSeries(name) {
    document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      if (canvas.dataset.chart === name) drawChart(canvas);
    });
  }

  function addPoint(name, point) {
    let points = series.get(name);
    if (!points) { points = []; series.set(name, points); }
    points.push(point);
    const oldest = point[0] - KEEP_SECONDS;
    while (points.length && points[0][0] < oldest) points.shift();
  }

  // -- live numbers ------------------------------------------------------------

  function percent(value) {
    return value === null || value === undefined ? "–" : value.toFixed(1) + " %";
  }

  function memory(rss, mem) {
    if (rss === null || rss === undefined) return percent(mem);
    return mem === null || mem === undefined ? humanSize(rss) : humanSize(rss) + " (" + mem.toFixed(1) + " %)";
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    let s = Math.floor(seconds);
    const d = Math.floor(s / 86400); s -= d * 86400;
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + m + "m";
    if (m) return m + "m " + s + "s";
    return s + "s";
  }

  function updateCells(sample) {
    const text = {
      cpu: percent(sample.cpu),
      mem: memory(sample.rss, sample.mem),
      age: duration(sample.age),
    };
    document.querySelectorAll("[data-series]").forEach(function (cell) {
      if (cell.dataset.series !== sample.series) return;
      const field = cell.dataset.field;
      if (field === "age" && sample.pid === null) return;
      if (field in text) cell.textContent = text[field];
    });
  }

  // -- the event stream ----------------------------------------------------------

  function connect(url) {
    const source = new EventSource(url);
    source.addEventListener("open", function () { setLive("live", "live"); });
    source.addEventListener("error", function () {
      if (source.readyState === EventSource.CLOSED) {
        setLive("closed", "disconnected: reload the page");
      } else {
        setLive("reconnecting", "reconnecting…");
      }
    });
    source.addEventListener("hello", function (event) {
      clockOffset = JSON.parse(event.data).now - Date.now() / 1000;
    });
    source.addEventListener("problem", function (event) {
      const box = document.getElementById("problem");
      if (box) box.innerHTML = JSON.parse(event.data).html;
    });
    source.addEventListener("fragments", function (event) {
      const parts = JSON.parse(event.data);
      for (const id of Object.keys(parts)) {
        const target = document.getElementById(id);
        if (!target) continue;
        // Parsed first, so that an unchanged part (the first event after the
        // page loads, usually) keeps its elements and a click in flight lands.
        const fresh = document.createElement("template");
        fresh.innerHTML = parts[id];
        if (fresh.innerHTML !== target.innerHTML) target.replaceChildren(fresh.content);
      }
      drawAll();
    });
    source.addEventListener("history", function (event) {
      const history = JSON.parse(event.data);
      for (const name of Object.keys(history)) series.set(name, history[name]);
      drawAll();
    });
    source.addEventListener("stat", function (event) {
      const sample = JSON.parse(event.data);
      addPoint(sample.series, [sample.t, sample.cpu, sample.mem, sample.rss]);
      updateCells(sample);
      drawSeries(sample.series);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    const url = document.body.dataset.events;
    if (url) connect(url);
    drawAll();
    window.addEventListener("resize", drawAll);
  });
})();
