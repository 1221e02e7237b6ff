/* Small SVG charts for the zqtwisted dashboard: sparklines and time charts, no library. */
"use strict";

const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";

  function node(name, attrs, parent) {
    const el = document.createElementNS(NS, name);
    for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, String(value));
    if (parent) parent.appendChild(el);
    return el;
  }

  function clear(svg) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
  }

  /* The smallest "nice" number (1, 2, 2.5, 5 x 10^n) at or above v (at least 0.1). */
  function niceCeil(v) {
    if (!(v > 0.1)) return v > 0 ? 0.1 : 1;
    const exp = Math.pow(10, Math.floor(Math.log10(v)));
    for (const step of [1, 2, 2.5, 5, 10]) {
      if (step * exp >= v) return step * exp;
    }
    return 10 * exp;
  }

  /* Path data of one series; a null value breaks the line. */
  function linePath(points) {
    let d = "";
    let pen = false;
    for (const p of points) {
      if (p === null) { pen = false; continue; }
      d += (pen ? "L" : "M") + p[0].toFixed(1) + "," + p[1].toFixed(1);
      pen = true;
    }
    return d;
  }

  /* Closed areas under a series, one per unbroken run. */
  function areaPath(points, baseY) {
    let d = "";
    let run = [];
    const flush = () => {
      if (run.length > 1) {
        d += "M" + run[0][0].toFixed(1) + "," + baseY.toFixed(1);
        for (const p of run) d += "L" + p[0].toFixed(1) + "," + p[1].toFixed(1);
        d += "L" + run[run.length - 1][0].toFixed(1) + "," + baseY.toFixed(1) + "Z";
      }
      run = [];
    };
    for (const p of points) {
      if (p === null) flush(); else run.push(p);
    }
    flush();
    return d;
  }

  function size(svg, fallbackWidth, fallbackHeight) {
    const box = svg.getBoundingClientRect();
    const width = Math.max(40, Math.round(box.width || fallbackWidth));
    const height = Math.max(20, Math.round(box.height || fallbackHeight));
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    return [width, height];
  }

  /* A sparkline of values over [end - span, end]. */
  function sparkline(svg, times, values, opts) {
    clear(svg);
    const [width, height] = size(svg, 118, 28);
    const end = opts.end;
    const span = opts.span;
    let max = 0;
    for (const v of values) if (v !== null && v > max) max = v;
    const top = max > 0 ? max : 1;
    const pad = 2;
    const points = times.map((t, i) => {
      const v = values[i];
      if (v === null || v === undefined || t < end - span) return null;
      const x = ((t - (end - span)) / span) * width;
      const y = height - pad - (v / top) * (height - 2 * pad);
      return [x, y];
    });
    node("line", { x1: 0, x2: width, y1: height - 0.5, y2: height - 0.5, stroke: "currentColor", "stroke-opacity": 0.12 }, svg);
    if (opts.fill) node("path", { d: areaPath(points, height - pad), fill: opts.fill, stroke: "none" }, svg);
    node("path", { d: linePath(points), fill: "none", stroke: opts.color, "stroke-width": 1.5, "stroke-linejoin": "round" }, svg);
    const title = node("title", {}, svg);
    title.textContent = opts.title || "";
  }

  function minutesLabel(seconds) {
    if (seconds <= 0) return "now";
    return "−" + Math.round(seconds / 60) + " min";
  }

  /*
   * A time chart: series = [{label, values, color, fill}], times in seconds,
   * over [end - span, end]; format(v) renders a value for the axis and the tooltip.
   */
  function timeChart(svg, times, series, opts) {
    clear(svg);
    const [width, height] = size(svg, 560, 190);
    const end = opts.end;
    const span = opts.span;
    const format = opts.format || String;
    const left = 48;
    const right = 8;
    const top = 8;
    const bottom = 20;
    const plotW = width - left - right;
    const plotH = height - top - bottom;
    let max = 0;
    for (const s of series) for (const v of s.values) if (v !== null && v > max) max = v;
    const step = Math.max(niceCeil(max / 4), opts.integer ? 1 : 0);
    const yMax = step * 4;
    const xOf = (t) => left + ((t - (end - span)) / span) * plotW;
    const yOf = (v) => top + plotH - (v / yMax) * plotH;

    for (let i = 0; i <= 4; i++) {
      const v = (yMax * i) / 4;
      const y = yOf(v);
      node("line", { class: i === 0 ? "axis" : "grid", x1: left, x2: width - right, y1: y, y2: y }, svg);
      const label = node("text", { x: left - 8, y: y + 4, "text-anchor": "end" }, svg);
      label.textContent = format(v);
    }
    for (let m = 0; m <= span / 60; m += 5) {
      const x = xOf(end - m * 60);
      const label = node("text", { x: x, y: height - 4, "text-anchor": m === 0 ? "end" : "middle" }, svg);
      label.textContent = minutesLabel(m * 60);
    }
    const visible = times.map((t) => t >= end - span);
    let any = false;
    for (const s of series) {
      const points = times.map((t, i) => {
        const v = s.values[i];
        if (!visible[i] || v === null || v === undefined) return null;
        any = true;
        return [xOf(t), yOf(v)];
      });
      if (s.fill) node("path", { d: areaPath(points, yOf(0)), fill: s.fill, stroke: "none" }, svg);
      node("path", { d: linePath(points), fill: "none", stroke: s.color, "stroke-width": 2, "stroke-linejoin": "round", "stroke-linecap": "round" }, svg);
    }
    if (!any) {
      const note = node("text", { class: "empty", x: left + plotW / 2, y: top + plotH / 2, "text-anchor": "middle" }, svg);
      note.textContent = "collecting data…";
    }
    hover(svg, times, series, { xOf, left, right: width - right, top, bottom: top + plotH, format, end, span });
  }

  let tip = null;

  function hover(svg, times, series, geo) {
    const cursor = node("line", { class: "cursor", x1: 0, x2: 0, y1: geo.top, y2: geo.bottom, visibility: "hidden" }, svg);
    svg.onmousemove = (event) => {
      const box = svg.getBoundingClientRect();
      const x = ((event.clientX - box.left) / box.width) * (geo.right + 8);
      let best = -1;
      let bestDistance = Infinity;
      times.forEach((t, i) => {
        if (t < geo.end - geo.span) return;
        const distance = Math.abs(geo.xOf(t) - x);
        if (distance < bestDistance) { bestDistance = distance; best = i; }
      });
      if (best < 0 || x < geo.left) { hide(cursor); return; }
      const cx = geo.xOf(times[best]);
      cursor.setAttribute("x1", cx);
      cursor.setAttribute("x2", cx);
      cursor.setAttribute("visibility", "visible");
      if (!tip) {
        tip = document.createElement("div");
        tip.className = "chart-tip";
        document.body.appendChild(tip);
      }
      const when = new Date(times[best] * 1000).toLocaleTimeString();
      const lines = [when].concat(series.map((s) => s.label + ": " + (s.values[best] === null ? "–" : geo.format(s.values[best]))));
      tip.textContent = lines.join("  ·  ");
      tip.hidden = false;
      tip.style.left = Math.min(event.clientX + 12, window.innerWidth - tip.offsetWidth - 8) + "px";
      tip.style.top = event.clientY - 34 + "px";
    };
    svg.onmouseleave = () => hide(cursor);
  }

  function hide(cursor) {
    cursor.setAttribute("visibility", "hidden");
    if (tip) tip.hidden = true;
  }

  return { sparkline, timeChart, niceCeil };
})();
