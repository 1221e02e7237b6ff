/* zqtwisted dashboard: polls /api/queues, draws the table and charts, lists and acts on dead letters. */
"use strict";

(() => {
  const TOKEN_KEY = "zqtwisted-dashboard-token";
  const PAGE_SIZE = 20;
  const $ = (id) => document.getElementById(id);

  const state = {
    data: null,
    history: { time: [], queues: {} },
    historySeconds: 900,
    interval: 2,
    lastTime: null,
    lastFetch: 0,
    failing: false,
    selected: null,
    rows: new Map(),
    token: sessionStorage.getItem(TOKEN_KEY),
    letters: { queue: null, offset: 0, total: 0, page: null, seenCount: null, loading: false, open: new Set() },
  };

  /* ---------- formatting ---------- */

  const intFormat = new Intl.NumberFormat("en-US");
  function fmtInt(v) { return v === null || v === undefined ? "–" : intFormat.format(v); }
  function fmtRate(v) {
    if (v === null || v === undefined) return "–";
    if (v === 0) return "0";
    if (v < 10) return v.toFixed(1);
    return intFormat.format(Math.round(v));
  }
  function fmtSeconds(s) {
    if (s === null || s === undefined) return "–";
    if (s === 0) return "0 ms";
    if (s < 0.001) return Math.max(1, Math.round(s * 1e6)) + " µs";
    if (s < 0.01) return (s * 1000).toFixed(2) + " ms";
    if (s < 1) return (s * 1000).toFixed(1) + " ms";
    if (s < 60) return s.toFixed(2) + " s";
    return (s / 60).toFixed(1) + " min";
  }
  function fmtAxis(v) {
    if (v >= 1e6) return (v / 1e6).toFixed(v % 1e6 ? 1 : 0) + "M";
    if (v >= 1e4) return (v / 1e3).toFixed(0) + "k";
    if (v >= 1e3) return (v / 1e3).toFixed(1) + "k";
    return v % 1 ? v.toFixed(1) : String(v);
  }
  function fmtBytes(n) {
    if (n < 1024) return n + " B";
    if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " kB";
    return (n / 1024 / 1024).toFixed(1) + " MB";
  }
  function fmtAgo(seconds) {
    if (seconds < 60) return Math.max(0, Math.round(seconds)) + " s ago";
    if (seconds < 3600) return Math.round(seconds / 60) + " min ago";
    if (seconds < 86400 * 2) return Math.round(seconds / 3600) + " h ago";
    return Math.round(seconds / 86400) + " days ago";
  }
  function fmtWhen(iso) {
    if (!iso) return "–";
    const t = Date.parse(iso);
    if (Number.isNaN(t)) return iso;
    return fmtAgo((Date.now() - t) / 1000);
  }
  function fmtUptime(seconds) {
    if (seconds < 3600) return "up " + Math.floor(seconds / 60) + " min";
    if (seconds < 86400) return "up " + Math.floor(seconds / 3600) + " h " + Math.floor((seconds % 3600) / 60) + " min";
    return "up " + Math.floor(seconds / 86400) + " days";
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function toast(message, error) {
    const node = el("div", "toast" + (error ? " error" : ""), message);
    $("toasts").appendChild(node);
    setTimeout(() => node.remove(), error ? 8000 : 4500);
  }

  /* ---------- API ---------- */

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(path, options) {
    const opts = options || {};
    const headers = { Accept: "application/json" };
    if (opts.auth) headers.Authorization = "Bearer " + (opts.token || state.token || "");
    const response = await fetch(path, { method: opts.method || "GET", headers, cache: "no-store" });
    if (response.status === 204) return null;
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok) throw new ApiError(response.status, (body && body.error) || response.statusText);
    return body;
  }

  /* ---------- polling ---------- */

  function mergeHistory(incoming) {
    const h = state.history;
    for (const name of Object.keys(incoming.queues)) {
      if (!h.queues[name]) h.queues[name] = { depth: new Array(h.time.length).fill(null), rate_in: new Array(h.time.length).fill(null), rate_out: new Array(h.time.length).fill(null) };
    }
    for (let i = 0; i < incoming.time.length; i++) {
      h.time.push(incoming.time[i]);
      for (const name of Object.keys(h.queues)) {
        const src = incoming.queues[name];
        for (const key of ["depth", "rate_in", "rate_out"]) h.queues[name][key].push(src ? src[key][i] : null);
      }
    }
    const cutoff = (h.time.length ? h.time[h.time.length - 1] : 0) - state.historySeconds;
    let drop = 0;
    while (drop < h.time.length && h.time[drop] < cutoff) drop++;
    if (drop) {
      h.time.splice(0, drop);
      for (const series of Object.values(h.queues)) for (const key of Object.keys(series)) series[key].splice(0, drop);
    }
  }

  async function poll() {
    try {
      const url = state.lastTime === null ? "/api/queues" : "/api/queues?since=" + encodeURIComponent(state.lastTime);
      const data = await api(url);
      state.failing = false;
      state.data = data;
      state.interval = data.interval || 2;
      state.historySeconds = data.history_seconds || 900;
      mergeHistory(data.history);
      if (state.history.time.length) state.lastTime = state.history.time[state.history.time.length - 1];
      state.lastFetch = Date.now();
      render();
    } catch (e) {
      state.failing = true;
      renderConnection();
    }
    setTimeout(poll, state.interval * 1000);
  }

  /* ---------- rendering: header and tiles ---------- */

  function renderConnection() {
    const pill = $("connection");
    const wide = (text) => el("span", "wide-only", text);
    if (state.failing) {
      pill.className = "pill pill-wait";
      pill.replaceChildren(wide("Service "), "unreachable");
    } else if (state.data && state.data.connected) {
      pill.className = "pill pill-ok";
      pill.replaceChildren(wide("RabbitMQ "), "connected");
    } else if (state.data) {
      pill.className = "pill pill-bad";
      pill.replaceChildren(wide("RabbitMQ "), "disconnected");
    }
    renderUpdated();
  }

  function renderUpdated() {
    const node = $("updated");
    if (!state.lastFetch) { node.textContent = ""; return; }
    const age = (Date.now() - state.lastFetch) / 1000;
    node.textContent = age < 1.5 ? "updated just now" : "updated " + fmtAgo(age);
    node.classList.toggle("stale", age > state.interval * 3);
  }

  function renderLock() {
    const button = $("lock");
    const data = state.data;
    if (!data) return;
    button.hidden = false;
    if (!data.actions) {
      button.disabled = true;
      button.textContent = "Read-only";
      button.title = "No [workers] http_token is configured: replay and purge are disabled";
      button.className = "btn btn-quiet";
    } else if (state.token) {
      button.disabled = false;
      button.replaceChildren(el("span", "wide-only", "Actions unlocked · "), "Lock");
      button.title = "Forget the token in this tab";
      button.className = "btn btn-quiet lock-open";
    } else {
      button.disabled = false;
      button.textContent = "Unlock actions";
      button.title = "Enter the dashboard token to replay and purge dead letters";
      button.className = "btn";
    }
  }

  function renderTiles(queues) {
    let depth = 0, ready = 0, unacked = 0, rin = 0, rout = 0, dead = 0, known = false;
    let worst = null, worstName = "";
    for (const q of queues) {
      if (q.depth !== null) { depth += q.depth; ready += q.ready; known = true; }
      unacked += q.unacked;
      rin += q.rate_in || 0;
      rout += q.rate_out || 0;
      dead += q.dead_letters || 0;
      if (q.consume_p99_seconds !== null && (worst === null || q.consume_p99_seconds > worst)) {
        worst = q.consume_p99_seconds;
        worstName = q.name;
      }
    }
    $("t-depth").textContent = known ? fmtInt(depth) : "–";
    $("t-depth-note").textContent = known ? fmtInt(ready) + " ready · " + fmtInt(unacked) + " unacked" : "ready + unacked";
    $("t-in").textContent = fmtRate(rin);
    $("t-out").textContent = fmtRate(rout);
    $("t-p99").textContent = fmtSeconds(worst);
    $("t-p99-note").textContent = worst === null ? "consume time" : worstName;
    $("t-dead").textContent = fmtInt(dead);
    $("t-dead-tile").classList.toggle("has-dead", dead > 0);
    $("t-dead-note").textContent = dead > 0 ? "waiting for replay" : "none waiting";
    const data = state.data;
    $("t-lag").textContent = fmtSeconds(data.reactor_lag_seconds);
    $("t-uptime").textContent = data.started && data.time ? fmtUptime(data.time - data.started) : "\u00a0";
    $("queues-note").textContent = queues.length + (queues.length === 1 ? " queue" : " queues") + " consumed by this process";
  }

  /* ---------- rendering: the queue table ---------- */

  const COLUMNS = [
    ["col-name", "Queue"], ["num", "Depth"], ["num", "Consumers"], ["num", "In/s"], ["num", "Out/s"],
    ["num", "p50"], ["num", "p99"], ["num", "Retries"], ["num", "Dead letters"], ["col-spark", "Depth"], ["col-spark", "Out/s"],
  ];

  function makeRow(name) {
    const tr = el("tr");
    tr.dataset.queue = name;
    const cells = COLUMNS.map(([cls, label]) => {
      const td = el("td", cls);
      td.dataset.label = label;
      tr.appendChild(td);
      return td;
    });
    const nameWrap = el("span", "qname");
    const dot = el("span", "dot");
    const label = el("span", "", name);
    nameWrap.append(dot, label);
    cells[0].appendChild(nameWrap);
    const depthWrap = el("span", "depth-cell");
    const depthValue = el("span", "depth-value");
    const depthSplit = el("span", "depth-split");
    depthWrap.append(depthValue, depthSplit);
    cells[1].appendChild(depthWrap);
    const deadBadge = el("a", "badge");
    deadBadge.href = "#queue=" + encodeURIComponent(name) + "&dead";
    deadBadge.addEventListener("click", (event) => {
      event.stopPropagation();
    });
    cells[8].appendChild(deadBadge);
    const sparkDepth = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    sparkDepth.setAttribute("class", "spark");
    cells[9].appendChild(sparkDepth);
    const sparkRate = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    sparkRate.setAttribute("class", "spark");
    cells[10].appendChild(sparkRate);
    tr.addEventListener("click", () => { location.hash = "queue=" + encodeURIComponent(name); });
    const row = { tr, cells, dot, depthValue, depthSplit, deadBadge, sparkDepth, sparkRate };
    state.rows.set(name, row);
    return row;
  }

  function setNumber(td, text, zero) {
    td.textContent = text;
    td.classList.toggle("zero", zero);
  }

  function renderTable(queues) {
    const body = $("queue-rows");
    const end = state.data.time || Date.now() / 1000;
    queues.forEach((q, index) => {
      const row = state.rows.get(q.name) || makeRow(q.name);
      if (body.children[index] !== row.tr) body.insertBefore(row.tr, body.children[index] || null);
      row.tr.classList.toggle("selected", q.name === state.selected);
      row.dot.classList.toggle("off", !q.attached);
      row.dot.title = q.attached ? "consuming" : "not attached to RabbitMQ";
      row.depthValue.textContent = fmtInt(q.depth);
      row.depthValue.classList.toggle("zero", q.depth === 0);
      row.depthSplit.textContent = q.ready === null || q.depth === 0 ? "" : fmtInt(q.ready) + " ready · " + fmtInt(q.unacked) + " unacked";
      row.tr.dataset.depth = q.depth === null ? "" : String(q.depth);
      const c = row.cells;
      setNumber(c[2], fmtInt(q.consumers), q.consumers === 0);
      setNumber(c[3], fmtRate(q.rate_in), !q.rate_in);
      setNumber(c[4], fmtRate(q.rate_out), !q.rate_out);
      setNumber(c[5], fmtSeconds(q.consume_p50_seconds), q.consume_p50_seconds === null);
      setNumber(c[6], fmtSeconds(q.consume_p99_seconds), q.consume_p99_seconds === null);
      setNumber(c[7], fmtInt(q.retried_total), !q.retried_total);
      row.deadBadge.textContent = fmtInt(q.dead_letters);
      row.deadBadge.classList.toggle("bad", (q.dead_letters || 0) > 0);
      row.deadBadge.title = "Dead letters in " + q.name + ".failed";
      const series = state.history.queues[q.name];
      if (series) {
        Charts.sparkline(row.sparkDepth, state.history.time, series.depth, { end, span: state.historySeconds, color: "#3b82f6", fill: "rgba(59,130,246,0.16)", title: "Depth, last 15 minutes" });
        Charts.sparkline(row.sparkRate, state.history.time, series.rate_out, { end, span: state.historySeconds, color: "#6366f1", fill: "rgba(99,102,241,0.12)", title: "Events out per second, last 15 minutes" });
      }
    });
  }

  /* ---------- rendering: the selected queue ---------- */

  function selectedFromHash() {
    const params = new URLSearchParams(location.hash.replace(/^#/, ""));
    return { queue: params.get("queue"), dead: params.has("dead") };
  }

  function renderDetail(queues) {
    const wanted = selectedFromHash().queue;
    const names = queues.map((q) => q.name);
    state.selected = names.includes(wanted) ? wanted : names[0] || null;
    const q = queues.find((x) => x.name === state.selected);
    $("detail").hidden = !q;
    if (!q) return;
    $("detail-title").textContent = q.name;
    const parts = [];
    parts.push(fmtInt(q.consumed_total) + " consumed");
    parts.push(fmtInt(q.failed_total) + " failed attempts");
    parts.push(fmtInt(q.dead_lettered_total) + " dead-lettered since start");
    parts.push(q.in_flight + " in flight");
    $("detail-note").textContent = parts.join(" · ");
    const series = state.history.queues[q.name];
    const end = state.data.time || Date.now() / 1000;
    const span = state.historySeconds;
    if (series) {
      Charts.timeChart($("chart-depth"), state.history.time, [
        { label: "depth", values: series.depth, color: "#3b82f6", fill: "rgba(59,130,246,0.16)" },
      ], { end, span, format: fmtAxis, integer: true });
      Charts.timeChart($("chart-rate"), state.history.time, [
        { label: "in/s", values: series.rate_in, color: "#14b8a6" },
        { label: "out/s", values: series.rate_out, color: "#6366f1" },
      ], { end, span, format: fmtAxis });
    }
    renderDeadHeader(q);
    const letters = state.letters;
    if (letters.queue !== q.name) {
      letters.queue = q.name;
      letters.offset = 0;
      letters.page = null;
      letters.open = new Set();
      loadLetters();
    } else if (letters.seenCount !== q.dead_letters && !letters.loading) {
      loadLetters();
    }
  }

  function renderDeadHeader(q) {
    const count = q.dead_letters || 0;
    $("dead-count").textContent = fmtInt(count);
    $("dead-count").classList.toggle("bad", count > 0);
    const canAct = state.data.actions;
    for (const id of ["replay-all", "purge"]) {
      $(id).disabled = !canAct || count === 0;
      $(id).title = canAct ? "" : "Read-only: no [workers] http_token is configured";
    }
    $("dead-hint").textContent = count
      ? "Events of " + q.name + " that ended in failure, oldest first, kept in " + q.name + ".failed. Secrets in the events are masked."
      : "";
  }

  async function loadLetters() {
    const letters = state.letters;
    const queue = letters.queue;
    if (!queue) return;
    letters.loading = true;
    const expected = state.data ? (state.data.queues.find((q) => q.name === queue) || {}).dead_letters : null;
    try {
      const page = await api("/api/failed/" + encodeURIComponent(queue) + "?offset=" + letters.offset + "&limit=" + PAGE_SIZE);
      if (letters.queue !== queue) return;
      if (page.letters.length === 0 && letters.offset > 0) {
        letters.offset = Math.max(0, letters.offset - PAGE_SIZE);
        letters.loading = false;
        return loadLetters();
      }
      letters.page = page;
      letters.total = page.total;
      letters.seenCount = expected;
      renderLetters();
    } catch (e) {
      letters.seenCount = expected;
      $("letters").replaceChildren(el("div", "empty-state", "Could not list the dead letters: " + e.message));
    } finally {
      letters.loading = false;
    }
  }

  function renderLetters() {
    const letters = state.letters;
    const page = letters.page;
    const list = $("letters");
    list.replaceChildren();
    if (!page || page.letters.length === 0) {
      list.appendChild(el("div", "empty-state", "No dead letters. Events that fail for good (retries exhausted, permanent errors, timeouts, malformed JSON) appear here."));
      $("pager").hidden = true;
      return;
    }
    for (const letter of page.letters) list.appendChild(letterCard(letter));
    const first = page.offset + 1;
    const last = page.offset + page.letters.length;
    $("page-info").textContent = first + "–" + last + " of " + fmtInt(page.total);
    $("pager").hidden = page.total <= PAGE_SIZE && page.offset === 0;
    $("prev").disabled = page.offset === 0;
    $("next").disabled = last >= page.total || page.offset + PAGE_SIZE > page.max_offset;
  }

  function letterCard(letter) {
    const card = el("article", "letter");
    card.dataset.id = letter.id;
    const top = el("div", "letter-top");
    const main = el("div", "letter-main");
    const title = el("div", "letter-title");
    const reason = letter.reason || "unknown";
    title.appendChild(el("span", "reason reason-" + reason.replace(/[^a-z-]/g, ""), reason));
    if (letter.exception) title.appendChild(el("span", "exc", letter.exception));
    if (letter.message) title.appendChild(el("span", "msg", letter.message));
    main.appendChild(title);
    const meta = el("div", "letter-meta");
    const last = el("span", "", "last failed " + fmtWhen(letter.last_failure));
    last.title = letter.last_failure || "";
    const first = el("span", "", "first failed " + fmtWhen(letter.first_failure));
    first.title = letter.first_failure || "";
    meta.append(
      el("span", "", (letter.attempts === null ? "?" : letter.attempts) + (letter.attempts === 1 ? " attempt" : " attempts")),
      first, last,
      el("span", "", fmtBytes(letter.size) + (letter.malformed ? " · not JSON" : "")),
    );
    main.appendChild(meta);
    top.appendChild(main);
    const actions = el("div", "letter-actions");
    const show = el("button", "btn btn-quiet btn-small", state.letters.open.has(letter.id) ? "Hide event" : "Show event");
    show.type = "button";
    const replay = el("button", "btn btn-small replay", "Replay");
    replay.type = "button";
    replay.disabled = !state.data.actions;
    replay.title = state.data.actions ? "Publish this event to " + state.letters.queue + " again" : "Read-only: no [workers] http_token is configured";
    actions.append(show, replay);
    top.appendChild(actions);
    card.appendChild(top);
    const pre = el("pre", "", letter.body + (letter.truncated ? "\n… (cut: " + fmtBytes(letter.size) + " in all)" : ""));
    pre.hidden = !state.letters.open.has(letter.id);
    card.appendChild(pre);
    show.addEventListener("click", () => {
      pre.hidden = !pre.hidden;
      show.textContent = pre.hidden ? "Show event" : "Hide event";
      if (pre.hidden) state.letters.open.delete(letter.id); else state.letters.open.add(letter.id);
    });
    replay.addEventListener("click", () => act("replay/" + encodeURIComponent(letter.id), "Replayed 1 event to " + state.letters.queue));
    return card;
  }

  /* ---------- actions ---------- */

  async function ensureToken() {
    if (state.token) return true;
    return openTokenDialog();
  }

  async function act(action, success) {
    const queue = state.letters.queue;
    if (!queue || !(await ensureToken())) return;
    try {
      const result = await api("/api/failed/" + encodeURIComponent(queue) + "/" + action, { method: "POST", auth: true });
      toast(typeof success === "function" ? success(result) : success);
    } catch (e) {
      if (e.status === 401) {
        forgetToken();
        toast("The token was refused: " + e.message, true);
      } else {
        toast(e.message, true);
      }
    }
    await loadLetters();
    refreshSoon();
  }

  function refreshSoon() {
    state.letters.seenCount = null;
  }

  function confirmDialog(title, text, ok) {
    return new Promise((resolve) => {
      const dialog = $("confirm-dialog");
      $("confirm-title").textContent = title;
      $("confirm-text").textContent = text;
      $("confirm-ok").textContent = ok;
      $("confirm-ok").className = "btn " + (ok === "Purge" ? "btn-danger" : "btn-primary");
      const done = (answer) => {
        dialog.onclose = null;
        if (dialog.open) dialog.close();
        resolve(answer);
      };
      $("confirm-form").onsubmit = (event) => { event.preventDefault(); done(true); };
      $("confirm-cancel").onclick = () => done(false);
      dialog.onclose = () => done(false);
      dialog.showModal();
    });
  }

  function openTokenDialog() {
    return new Promise((resolve) => {
      const dialog = $("token-dialog");
      const input = $("token-input");
      input.value = "";
      $("token-error").textContent = "";
      const done = (answer) => {
        dialog.onclose = null;
        if (dialog.open) dialog.close();
        resolve(answer);
      };
      $("token-form").onsubmit = async (event) => {
        event.preventDefault();
        const token = input.value.trim();
        if (!token) return;
        $("token-submit").disabled = true;
        try {
          await api("/api/auth", { method: "POST", auth: true, token });
          state.token = token;
          sessionStorage.setItem(TOKEN_KEY, token);
          renderLock();
          toast("Actions unlocked in this tab");
          done(true);
        } catch (e) {
          $("token-error").textContent = e.status === 401 ? "Wrong token." : e.message;
        } finally {
          $("token-submit").disabled = false;
        }
      };
      $("token-cancel").onclick = () => done(false);
      dialog.onclose = () => done(false);
      dialog.showModal();
      input.focus();
    });
  }

  function forgetToken() {
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    renderLock();
  }

  /* ---------- wiring ---------- */

  function render() {
    const data = state.data;
    if (!data) return;
    renderConnection();
    renderLock();
    renderTiles(data.queues);
    renderDetail(data.queues);
    renderTable(data.queues);
  }

  function init() {
    $("lock").addEventListener("click", () => {
      if (state.token) { forgetToken(); toast("Actions locked"); } else openTokenDialog();
    });
    $("refresh-dead").addEventListener("click", () => loadLetters());
    $("prev").addEventListener("click", () => { state.letters.offset = Math.max(0, state.letters.offset - PAGE_SIZE); loadLetters(); });
    $("next").addEventListener("click", () => { state.letters.offset += PAGE_SIZE; loadLetters(); });
    $("replay-all").addEventListener("click", async () => {
      const queue = state.letters.queue;
      const total = state.letters.total;
      if (!(await ensureToken())) return;
      if (await confirmDialog("Replay every dead letter?", "The " + fmtInt(total) + " dead letter(s) of " + queue + " go back to " + queue + " (failed_tries reset) and are processed again.", "Replay all")) {
        act("replay", (r) => "Replayed " + fmtInt(r.replayed) + " event(s) to " + queue);
      }
    });
    $("purge").addEventListener("click", async () => {
      const queue = state.letters.queue;
      const total = state.letters.total;
      if (!(await ensureToken())) return;
      if (await confirmDialog("Purge the dead letters?", "The " + fmtInt(total) + " dead letter(s) of " + queue + " are deleted for good. This cannot be undone.", "Purge")) {
        act("purge", (r) => "Purged " + fmtInt(r.purged) + " dead letter(s) of " + queue);
      }
    });
    window.addEventListener("hashchange", () => {
      render();
      if (selectedFromHash().dead) $("dead").scrollIntoView({ behavior: "smooth", block: "start" });
    });
    let resizeTimer = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(render, 150);
    });
    setInterval(renderUpdated, 1000);
    poll();
  }

  init();
})();
