// warn-dispatch console: one script, no build step, no dependencies.
// Every value from the server is put into the page as text (el(), textContent), never as HTML.
// The API token lives in this tab's sessionStorage and goes out as a Bearer header, also for the
// live feed (read with fetch streaming: EventSource cannot send headers).
"use strict";

const API = "/api/v1";

const MESSAGES = {
  "zh-CN": {
    "nav.board": "预警看板", "nav.audience": "受众筛选", "nav.campaigns": "宣传活动",
    "nav.officers": "民警统计", "nav.grids": "网格覆盖", "nav.logout": "退出",
    "lang.switch": "English",
    "login.title": "登录", "login.token": "API 令牌", "login.submit": "登录",
    "login.help": "令牌由管理员用 warn-dispatch token create 创建。",
    "login.bad": "令牌无效或已撤销。",
    "role.centre": "预警中心", "role.chief": "所长", "role.officer": "民警", "role.admin": "县局管理员",
    "board.title": "进行中的预警", "board.empty": "暂无进行中的预警。",
    "board.live": "实时", "board.offline": "连接中断，正在重连…",
    "col.id": "编号", "col.kind": "类型", "col.level": "级别", "col.status": "状态", "col.grid": "网格",
    "col.station": "派出所", "col.officer": "民警处置", "col.contact": "联系群众", "col.acked": "签收人",
    "col.next": "距下一时限", "col.received": "接收时间",
    "kind.fraud": "电诈", "kind.help_request": "求助", "kind.missing_child": "走失儿童", "kind.road_hazard": "道路险情",
    "status.active": "处置中", "status.closed": "已办结", "status.cancelled": "已撤销", "status.expired": "已过期",
    "overdue": "已超时",
    "warning.title": "预警", "warning.resident": "群众", "warning.target": "对象", "warning.timeline": "处置时间线",
    "warning.expires": "有效期至", "warning.outcome": "结果", "warning.notified": "已通知",
    "warning.missing": "预警不存在，或不在您的辖区内。",
    "act.title": "处置", "act.ack": "签收", "act.call": "回报电话结果", "act.read": "群众已读消息",
    "act.visit": "已上门", "act.outcome": "办结并回报结果", "act.none": "您无需处置此预警。",
    "act.sent": "已提交。", "act.failed": "提交失败：",
    "call.answered": "已接通", "call.busy": "占线", "call.no_answer": "无人接听",
    "outcome.dissuaded": "已劝阻", "outcome.defrauded": "已被骗", "outcome.unreachable": "联系不上",
    "outcome.false_alarm": "误报", "outcome.resolved": "已解决",
    "track.warning": "预警", "track.officer": "民警", "track.contact": "群众",
    "audience.title": "受众筛选", "audience.expr": "表达式（& 且，| 或，~ 非，括号）",
    "audience.count": "人数", "audience.preview": "名单预览（已脱敏）", "audience.error": "表达式有误",
    "audience.position": "位置",
    "campaigns.title": "宣传活动进度", "campaigns.empty": "暂无宣传活动。",
    "col.campaign": "活动", "col.state": "状态", "col.resolved": "受众", "col.sent": "已发送", "col.read": "已读",
    "col.pending": "待发", "col.capped": "频控跳过", "col.progress": "进度", "col.tasks": "民警确认",
    "officers.title": "民警统计", "col.key": "民警", "col.role": "岗位", "col.messages": "消息",
    "col.chats": "单聊", "col.warnings": "预警", "col.handled": "签收", "col.ack_p50": "签收用时中位数",
    "col.missed": "超时", "col.escalations": "升级",
    "grids.title": "网格：防范覆盖与预警", "grids.legend.cov": "防范消息/人（颜色）",
    "grids.legend.warn": "每万人预警（红点）", "grids.flagged": "覆盖低而预警多的网格",
    "col.residents": "人口", "col.prevention": "防范消息/人", "col.per10k": "每万人预警",
    "loading": "加载中…", "error.http": "请求失败", "none": "—",
  },
  en: {
    "nav.board": "Board", "nav.audience": "Audience", "nav.campaigns": "Campaigns",
    "nav.officers": "Officers", "nav.grids": "Grids", "nav.logout": "Log out",
    "lang.switch": "中文",
    "login.title": "Log in", "login.token": "API token", "login.submit": "Log in",
    "login.help": "Tokens are made by an administrator with warn-dispatch token create.",
    "login.bad": "The token is not valid or was revoked.",
    "role.centre": "Warning centre", "role.chief": "Station chief", "role.officer": "Officer", "role.admin": "County admin",
    "board.title": "Active warnings", "board.empty": "No active warnings.",
    "board.live": "live", "board.offline": "disconnected, reconnecting…",
    "col.id": "Id", "col.kind": "Kind", "col.level": "Level", "col.status": "Status", "col.grid": "Grid",
    "col.station": "Station", "col.officer": "Officer ladder", "col.contact": "Contact ladder", "col.acked": "Acked by",
    "col.next": "Next deadline in", "col.received": "Received",
    "kind.fraud": "fraud", "kind.help_request": "help request", "kind.missing_child": "missing child", "kind.road_hazard": "road hazard",
    "status.active": "active", "status.closed": "closed", "status.cancelled": "cancelled", "status.expired": "expired",
    "overdue": "overdue",
    "warning.title": "Warning", "warning.resident": "Resident", "warning.target": "Target", "warning.timeline": "Timeline",
    "warning.expires": "Expires", "warning.outcome": "Outcome", "warning.notified": "Notified",
    "warning.missing": "No such warning, or not in your jurisdiction.",
    "act.title": "Act", "act.ack": "Acknowledge", "act.call": "Report call result", "act.read": "Resident read the message",
    "act.visit": "Visited", "act.outcome": "Close with outcome", "act.none": "You are not asked to act on this warning.",
    "act.sent": "Sent.", "act.failed": "Failed: ",
    "call.answered": "answered", "call.busy": "busy", "call.no_answer": "no answer",
    "outcome.dissuaded": "dissuaded", "outcome.defrauded": "defrauded", "outcome.unreachable": "unreachable",
    "outcome.false_alarm": "false alarm", "outcome.resolved": "resolved",
    "track.warning": "warning", "track.officer": "officer", "track.contact": "contact",
    "audience.title": "Audience builder", "audience.expr": "Expression (& and, | or, ~ not, parentheses)",
    "audience.count": "Residents", "audience.preview": "Preview (masked)", "audience.error": "Error in the expression",
    "audience.position": "position",
    "campaigns.title": "Campaign progress", "campaigns.empty": "No campaigns.",
    "col.campaign": "Campaign", "col.state": "State", "col.resolved": "Audience", "col.sent": "Sent", "col.read": "Read",
    "col.pending": "Pending", "col.capped": "Capped", "col.progress": "Progress", "col.tasks": "Tasks confirmed",
    "officers.title": "Officers", "col.key": "Officer", "col.role": "Role", "col.messages": "Messages",
    "col.chats": "Chats", "col.warnings": "Warnings", "col.handled": "Acked", "col.ack_p50": "Time to ack (p50)",
    "col.missed": "Deadlines missed", "col.escalations": "Escalations",
    "grids.title": "Grids: prevention coverage against warnings", "grids.legend.cov": "prevention messages per resident (colour)",
    "grids.legend.warn": "warnings per 10k residents (red dot)", "grids.flagged": "Low coverage, many warnings",
    "col.residents": "Residents", "col.prevention": "Prevention / resident", "col.per10k": "Warnings / 10k",
    "loading": "Loading…", "error.http": "Request failed", "none": "—",
  },
};

let lang = localStorage.getItem("wd.lang") || "zh-CN";
const t = (key) => (MESSAGES[lang] && MESSAGES[lang][key]) || MESSAGES.en[key] || key;
const tOr = (prefix, value) => {
  const key = `${prefix}.${value}`;
  return MESSAGES[lang][key] || MESSAGES.en[key] || String(value);
};

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// ---- session ------------------------------------------------------------------------------
const session = {
  get token() { return sessionStorage.getItem("wd.token"); },
  set token(v) { v ? sessionStorage.setItem("wd.token", v) : sessionStorage.removeItem("wd.token"); },
  me: null,
};

class HttpError extends Error {
  constructor(status, body) {
    super(body && (body.expected || body.error) ? `${body.field ? body.field + ": " : ""}${body.expected || body.error}` : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${session.token}`, ...(options.headers || {}) };
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options = { ...options, body: JSON.stringify(options.json) };
  }
  const response = await fetch(API + path, { ...options, headers });
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (response.status === 401) { logout(); throw new HttpError(401, body); }
  if (!response.ok) throw new HttpError(response.status, body);
  return body;
}

function logout() {
  session.token = null;
  session.me = null;
  location.hash = "#/login";
}

// ---- the engine's clock ---------------------------------------------------------------------
// The server sends its time and rate (1 live, the replay speed under simulate --serve); between
// updates the countdowns run on the browser's clock times that rate.
const clock = { now: Date.now() / 1000, rate: 1, at: performance.now() };
function setClock(now, rate) {
  if (typeof now === "number") { clock.now = now; clock.at = performance.now(); }
  if (typeof rate === "number") clock.rate = rate;
}
function engineNow() { return clock.now + ((performance.now() - clock.at) / 1000) * clock.rate; }

function fmtLeft(seconds) {
  if (seconds === null || seconds === undefined) return t("none");
  if (seconds < 0) return `${t("overdue")} ${fmtSpan(-seconds)}`;
  return fmtSpan(seconds);
}
function fmtSpan(s) {
  s = Math.floor(s);
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${String(m).padStart(2, "0")}m`;
  return `${m}:${String(sec).padStart(2, "0")}`;
}
function fmtTime(epoch) {
  if (epoch === null || epoch === undefined) return t("none");
  return new Date(epoch * 1000).toLocaleString(lang === "en" ? "en-GB" : "zh-CN", { hour12: false });
}
function fmtDuration(s) { return s === null || s === undefined ? t("none") : fmtSpan(s); }

// ---- the live feed --------------------------------------------------------------------------
// One stream per page: GET /events with the Bearer header, parsed as server-sent events.
// Reconnects after a second; a "reset" (fell too far behind) makes the page reload its list.
class LiveFeed {
  constructor(since, handlers) {
    this.since = since;
    this.handlers = handlers;
    this.abort = new AbortController();
    this.run();
  }
  stop() { this.abort.abort(); }
  async run() {
    while (!this.abort.signal.aborted) {
      try {
        const response = await fetch(`${API}/events?since=${this.since}`, {
          headers: { Authorization: `Bearer ${session.token}` }, signal: this.abort.signal,
        });
        if (response.status === 401) { logout(); return; }
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        this.handlers.status(true);
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            this.dispatch(buffer.slice(0, cut));
            buffer = buffer.slice(cut + 2);
          }
        }
      } catch (e) {
        if (this.abort.signal.aborted) return;
      }
      this.handlers.status(false);
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
  dispatch(block) {
    let event = "message", data = "";
    for (const line of block.split("\n")) {
      if (line.startsWith("event: ")) event = line.slice(7);
      else if (line.startsWith("data: ")) data += line.slice(6);
    }
    if (!data) return;
    const payload = JSON.parse(data);
    setClock(payload.now, payload.rate);
    if (typeof payload.version === "number") this.since = payload.version;
    const handler = this.handlers[event];
    if (handler) handler(payload);
  }
}

// ---- pages ------------------------------------------------------------------------------------
let current = { feed: null, timers: [] };
function leavePage() {
  if (current.feed) current.feed.stop();
  current.timers.forEach(clearInterval);
  current = { feed: null, timers: [] };
}
const main = () => document.getElementById("main");
function show(...nodes) { main().replaceChildren(...nodes); }
function every(ms, fn) { current.timers.push(setInterval(fn, ms)); }
function failure(e) { return el("p", { class: "error", "data-testid": "error" }, `${t("error.http")}: ${e.message}`); }

function pageLogin() {
  const input = el("input", { type: "password", id: "token", autocomplete: "off", placeholder: "wd_…" });
  const message = el("p", { class: "error" });
  const form = el("form", {
    onsubmit: async (ev) => {
      ev.preventDefault();
      session.token = input.value.trim();
      try {
        session.me = await api("/me");
        location.hash = "#/board";
      } catch (e) {
        session.token = null;
        message.textContent = t("login.bad");
      }
    },
  }, el("label", { for: "token" }, t("login.token")), input, el("button", { type: "submit" }, t("login.submit")));
  show(el("h1", {}, t("login.title")), el("div", { class: "card" }, form, el("p", { class: "muted" }, t("login.help")), message));
  input.focus();
}

function trackText(track) {
  if (!track || track.status === "off") return t("none");
  return track.to ? `${track.label} → ${track.to}` : track.label;
}

async function pageBoard() {
  const rows = new Map();
  const tbody = el("tbody");
  const live = el("span", { class: "live", "data-testid": "live" });
  const empty = el("p", { class: "muted" }, t("board.empty"));
  const table = el("table", { "data-testid": "board" },
    el("thead", {}, el("tr", {},
      ["col.id", "col.kind", "col.level", "col.status", "col.grid", "col.officer", "col.contact", "col.acked", "col.next"]
        .map((k) => el("th", { class: k === "col.next" ? "num" : null }, t(k))))),
    tbody);
  show(el("h1", {}, t("board.title"), live), table, empty);

  function render(w, flash) {
    const left = el("td", { class: "num", "data-deadline": w.next_deadline ?? "" });
    const tr = el("tr", { class: `level-${w.level}${flash ? " flash" : ""}`, "data-id": w.id, "data-status": w.status },
      el("td", {}, el("a", { href: `#/warning/${encodeURIComponent(w.id)}` }, w.id)),
      el("td", {}, tOr("kind", w.kind)),
      el("td", { class: "num" }, w.level),
      el("td", {}, tOr("status", w.status)),
      el("td", {}, w.grid || t("none")),
      el("td", {}, trackText(w.officer_track)),
      el("td", {}, trackText(w.contact_track)),
      el("td", {}, w.acked_by || t("none")),
      left);
    return tr;
  }
  function redraw() {
    const active = [...rows.values()].filter((w) => w.status === "active")
      .sort((a, b) => a.level - b.level || (a.next_deadline ?? Infinity) - (b.next_deadline ?? Infinity));
    const flashing = new Set(redraw.flash || []);
    redraw.flash = [];
    tbody.replaceChildren(...active.map((w) => render(w, flashing.has(w.id))));
    empty.hidden = active.length > 0;
    tick();
  }
  function tick() {
    const now = engineNow();
    for (const td of tbody.querySelectorAll("td[data-deadline]")) {
      const d = parseFloat(td.dataset.deadline);
      if (Number.isNaN(d)) continue;
      const left = d - now;
      td.textContent = fmtLeft(left);
      td.className = "num" + (left < 0 ? " overdue" : left < 120 ? " soon" : "");
    }
  }
  async function load() {
    const listing = await api("/warnings?status=active&limit=1000");
    setClock(listing.now, listing.rate);
    rows.clear();
    for (const w of listing.warnings) rows.set(w.id, w);
    redraw();
    return listing.version;
  }
  let version;
  try { version = await load(); } catch (e) { show(failure(e)); return; }
  current.feed = new LiveFeed(version, {
    status: (on) => { live.className = `live ${on ? "on" : "off"}`; live.textContent = on ? t("board.live") : t("board.offline"); },
    changed: (p) => {
      for (const w of p.warnings) rows.set(w.id, w);
      for (const id of p.gone) rows.delete(id);
      redraw.flash = p.warnings.map((w) => w.id);
      redraw();
    },
    reset: async () => { try { await load(); } catch (e) { /* the next event retries */ } },
  });
  every(250, tick);
}

async function pageWarning(id) {
  let w;
  try { w = await api(`/warnings/${encodeURIComponent(id)}`); }
  catch (e) {
    show(el("h1", {}, `${t("warning.title")} ${id}`),
      el("p", { class: "error", "data-testid": "error" }, e.status === 404 ? t("warning.missing") : `${t("error.http")}: ${e.message}`));
    return;
  }
  const note = el("p", { "data-testid": "act-result" });
  async function send(body) {
    note.className = ""; note.textContent = "";
    try {
      await api(`/warnings/${encodeURIComponent(id)}/feedback`, { method: "POST", json: body });
      note.className = "notice"; note.textContent = t("act.sent");
    } catch (e) {
      note.className = "error"; note.textContent = t("act.failed") + e.message;
    }
  }
  function actions(w) {
    const may = w.status === "active" ? w.may : [];
    if (!may || may.length === 0) return el("p", { class: "muted" }, t("act.none"));
    const out = [];
    if (may.includes("ack") && !w.acked_by) out.push(el("button", { type: "button", "data-act": "ack", onclick: () => send({ type: "ack" }) }, t("act.ack")));
    if (may.includes("call")) {
      const pick = el("select", { "data-testid": "call-result" }, ["busy", "answered", "no_answer"].map((v) => el("option", { value: v }, tOr("call", v))));
      out.push(el("span", {}, pick, el("button", { type: "button", "data-act": "call", onclick: () => send({ type: "call", result: pick.value }) }, t("act.call"))));
    }
    if (may.includes("read")) out.push(el("button", { type: "button", "data-act": "read", onclick: () => send({ type: "read" }) }, t("act.read")));
    if (may.includes("visit")) out.push(el("button", { type: "button", "data-act": "visit", onclick: () => send({ type: "visit" }) }, t("act.visit")));
    if (may.includes("outcome")) {
      const pick = el("select", { "data-testid": "outcome" }, ["dissuaded", "resolved", "unreachable", "false_alarm", "defrauded"].map((v) => el("option", { value: v }, tOr("outcome", v))));
      out.push(el("span", {}, pick, el("button", { type: "button", "data-act": "outcome", onclick: () => send({ type: "outcome", outcome: pick.value }) }, t("act.outcome"))));
    }
    return el("div", { class: "actions" }, out);
  }
  const details = el("div");
  const timeline = el("ol", { class: "timeline", "data-testid": "timeline" });
  const acts = el("div");
  function render(w) {
    details.replaceChildren(el("dl", { class: "kv" },
      el("dt", {}, t("col.kind")), el("dd", {}, tOr("kind", w.kind)),
      el("dt", {}, t("col.level")), el("dd", {}, w.level),
      el("dt", {}, t("col.status")), el("dd", { "data-testid": "status" }, tOr("status", w.status)),
      el("dt", {}, t("warning.target")), el("dd", {}, w.target),
      w.resident ? [el("dt", {}, t("warning.resident")), el("dd", {}, `${w.resident.name}  ${w.resident.phone}`)] : null,
      el("dt", {}, t("col.grid")), el("dd", {}, `${w.grid || t("none")} / ${w.station || t("none")}`),
      el("dt", {}, t("col.officer")), el("dd", {}, trackText(w.officer_track)),
      el("dt", {}, t("col.contact")), el("dd", {}, trackText(w.contact_track)),
      el("dt", {}, t("col.acked")), el("dd", { "data-testid": "acked-by" }, w.acked_by || t("none")),
      el("dt", {}, t("warning.notified")), el("dd", {}, w.notified.join(", ") || t("none")),
      el("dt", {}, t("warning.outcome")), el("dd", {}, w.outcome ? tOr("outcome", w.outcome) : t("none")),
      el("dt", {}, t("warning.expires")), el("dd", {}, fmtTime(w.expires_at))));
    timeline.replaceChildren(...w.timeline.map((x) => el("li", { "data-track": x.track, "data-to": x.to },
      el("span", { class: "at" }, fmtTime(x.at)), el("span", { class: "track" }, tOr("track", x.track)),
      ` ${x.from} → ${x.to}  `, el("span", { class: "muted" }, x.reason))));
    acts.replaceChildren(actions(w));
  }
  render(w);
  show(el("h1", {}, `${t("warning.title")} ${w.id}`),
    el("div", { class: "card" }, details),
    el("div", { class: "card" }, el("h2", {}, t("act.title")), acts, note),
    el("div", { class: "card" }, el("h2", {}, t("warning.timeline")), timeline));
  const listing = await api("/warnings?status=all&limit=1").catch(() => null);
  current.feed = new LiveFeed(listing ? listing.version : 0, {
    status: () => {},
    changed: async (p) => {
      if (p.warnings.some((x) => x.id === id)) {
        try { render(await api(`/warnings/${encodeURIComponent(id)}`)); } catch (e) { /* gone */ }
      }
    },
    reset: async () => { try { render(await api(`/warnings/${encodeURIComponent(id)}`)); } catch (e) { /* gone */ } },
  });
}

function pageAudience() {
  const input = el("input", { type: "text", id: "expr", value: sessionStorage.getItem("wd.expr") || "elderly & ~warned_7d", spellcheck: "false", autocomplete: "off" });
  const count = el("div", { class: "count", "data-testid": "count" });
  const error = el("div", { class: "error", "data-testid": "expr-error" });
  const preview = el("tbody");
  const previewBlock = el("div", {}, el("h2", {}, t("audience.preview")),
    el("table", {}, el("thead", {}, el("tr", {}, ["col.id", "col.grid", "col.key", "warning.resident"].map((k) => el("th", {}, t(k))))), preview));
  const mayPreview = session.me && session.me.role !== "admin";
  previewBlock.hidden = !mayPreview;
  show(el("h1", {}, t("audience.title")),
    el("div", { class: "card" }, el("label", { for: "expr" }, t("audience.expr")), input, error),
    el("div", { class: "card" }, el("div", { class: "muted" }, t("audience.count")), count), previewBlock);
  let seq = 0, timer = null;
  async function update() {
    const expr = input.value;
    sessionStorage.setItem("wd.expr", expr);
    const mine = ++seq;
    const path = mayPreview ? "/audiences/preview" : "/audiences/count";
    try {
      const result = await api(`${path}?expr=${encodeURIComponent(expr)}&limit=20`);
      if (mine !== seq) return;
      error.replaceChildren();
      count.textContent = result.count.toLocaleString();
      preview.replaceChildren(...(result.residents || []).map((r) => el("tr", {},
        el("td", {}, r.id), el("td", {}, r.grid), el("td", {}, r.officer || t("none")), el("td", {}, `${r.name} ${r.phone}`))));
    } catch (e) {
      if (mine !== seq) return;
      count.textContent = t("none");
      preview.replaceChildren();
      if (e.body && typeof e.body.position === "number") {
        const pos = Math.min(e.body.position, expr.length);
        const end = Math.max(pos + 1, (expr.slice(pos).match(/^[\w:.\-]+/) || [""])[0].length + pos);
        error.replaceChildren(
          el("div", {}, `${t("audience.error")} (${t("audience.position")} ${pos}): `, el("span", { "data-testid": "expected" }, e.body.expected)),
          el("div", { class: "expr" }, expr.slice(0, pos), el("mark", {}, expr.slice(pos, end) || " "), expr.slice(end)));
      } else {
        error.textContent = e.message;
      }
    }
  }
  input.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(update, 150); });
  update();
  input.focus();
}

async function pageCampaigns() {
  const tbody = el("tbody");
  const empty = el("p", { class: "muted" }, t("campaigns.empty"));
  show(el("h1", {}, t("campaigns.title")), el("table", { "data-testid": "campaigns" }, el("thead", {}, el("tr", {},
    ["col.campaign", "col.state", "col.resolved", "col.capped", "col.sent", "col.read", "col.pending", "col.tasks", "col.progress"]
      .map((k) => el("th", {}, t(k))))), tbody), empty);
  async function load() {
    let data;
    try { data = await api("/campaigns"); } catch (e) { show(failure(e)); leavePage(); return; }
    empty.hidden = data.campaigns.length > 0;
    tbody.replaceChildren(...data.campaigns.map((c) => {
      const done = c.to_send ? (c.sent + c.dropped) / c.to_send : 1;
      return el("tr", { "data-id": c.campaign_id },
        el("td", {}, c.campaign_id), el("td", {}, c.state), el("td", { class: "num" }, c.resolved),
        el("td", { class: "num" }, c.capped), el("td", { class: "num" }, c.sent), el("td", { class: "num" }, c.read),
        el("td", { class: "num" }, c.pending), el("td", { class: "num" }, `${c.confirmed_tasks}/${c.tasks}`),
        el("td", {}, el("div", { class: "bar", title: `${Math.round(done * 100)}%` }, el("span", { style: `width:${Math.round(done * 100)}%` }))));
    }));
  }
  await load();
  every(2000, load);
}

async function pageOfficers() {
  let stats;
  try { stats = await api("/stats"); } catch (e) { show(failure(e)); return; }
  const officers = [...(stats.officers || [])].sort((a, b) => b.counters.deadlines_missed - a.counters.deadlines_missed || a.key.localeCompare(b.key));
  const cols = ["col.key", "col.station", "col.role", "col.messages", "col.chats", "col.warnings", "col.handled", "col.ack_p50", "col.missed", "col.escalations"];
  show(el("h1", {}, t("officers.title")), el("table", { "data-testid": "officers" },
    el("thead", {}, el("tr", {}, cols.map((k, i) => el("th", { class: i > 2 ? "num" : null }, t(k))))),
    el("tbody", {}, officers.map((o) => {
      const c = o.counters;
      return el("tr", { "data-id": o.key },
        el("td", {}, o.key), el("td", {}, o.station), el("td", {}, o.role),
        el("td", { class: "num" }, c.messages_sent), el("td", { class: "num" }, c.chats),
        el("td", { class: "num" }, c.warnings), el("td", { class: "num" }, c.warnings_handled),
        el("td", { class: "num" }, fmtDuration(c.time_to_ack.p50)), el("td", { class: "num" }, c.deadlines_missed),
        el("td", { class: "num" }, c.escalations));
    }))));
}

async function pageGrids() {
  let stats;
  try { stats = await api("/stats"); } catch (e) { show(failure(e)); return; }
  const grids = (stats.grids || []).filter((g) => g.residents > 0);
  const cov = grids.map((g) => g.prevention_messages / g.residents);
  const rate = grids.map((g) => (1e4 * g.warnings) / g.residents);
  const maxCov = Math.max(1e-9, ...cov), maxRate = Math.max(1e-9, ...rate);
  const sortedCov = [...cov].sort((a, b) => a - b), sortedRate = [...rate].sort((a, b) => a - b);
  const medCov = sortedCov[Math.floor(sortedCov.length / 2)] ?? 0;
  const p90Rate = sortedRate[Math.floor(sortedRate.length * 0.9)] ?? 0;
  const flagged = [];
  const cells = grids.map((g, i) => {
    const x = cov[i] / maxCov;
    const hue = Math.round(x * 130);  // red (none) -> green (most)
    const bad = cov[i] <= medCov && rate[i] >= p90Rate && rate[i] > 0;
    if (bad) flagged.push([g, cov[i], rate[i]]);
    const size = 4 + Math.round(14 * Math.sqrt(rate[i] / maxRate));
    return el("div", { class: `cell${bad ? " flagged" : ""}`, "data-grid": g.key, title: `${g.key}: ${cov[i].toFixed(2)} / ${rate[i].toFixed(1)}`, style: `background: hsl(${hue}, 70%, ${88 - x * 35}%)` },
      g.key, rate[i] > 0 ? el("span", { class: "dot", style: `width:${size}px;height:${size}px` }) : null);
  });
  flagged.sort((a, b) => b[2] - a[2]);
  show(el("h1", {}, t("grids.title")),
    el("div", { class: "legend" }, el("span", {}, el("span", { class: "swatch" }), " ", t("grids.legend.cov")), el("span", {}, t("grids.legend.warn"))),
    el("div", { class: "grid-map", "data-testid": "grid-map" }, cells),
    el("h2", {}, t("grids.flagged")),
    el("table", {}, el("thead", {}, el("tr", {}, ["col.grid", "col.residents", "col.warnings", "col.per10k", "col.prevention"].map((k) => el("th", {}, t(k))))),
      el("tbody", {}, flagged.slice(0, 20).map(([g, c, r]) => el("tr", {}, el("td", {}, g.key), el("td", { class: "num" }, g.residents),
        el("td", { class: "num" }, g.warnings), el("td", { class: "num" }, r.toFixed(1)), el("td", { class: "num" }, c.toFixed(2)))))));
}

// ---- routing ----------------------------------------------------------------------------------
function chrome() {
  document.documentElement.lang = lang;
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  document.getElementById("lang").textContent = t("lang.switch");
  const signedIn = Boolean(session.me);
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("logout").hidden = !signedIn;
  document.getElementById("whoami").textContent = signedIn
    ? `${t(`role.${session.me.role}`)}${session.me.subject ? " " + session.me.subject : session.me.station ? " " + session.me.station : ""}` : "";
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", location.hash.startsWith(a.getAttribute("href")));
}

async function route() {
  leavePage();
  // A token may arrive in the fragment (simulate --serve prints such a link): keep it, drop it from the URL.
  const m = location.hash.match(/^#token=([\w-]+)/);
  if (m) { session.token = m[1]; session.me = null; history.replaceState(null, "", location.pathname + "#/board"); }
  if (!session.token) { session.me = null; chrome(); if (location.hash !== "#/login") { location.hash = "#/login"; return; } pageLogin(); return; }
  if (!session.me) {
    try { session.me = await api("/me"); } catch (e) { if (e.status !== 401) show(failure(e)); chrome(); return; }
  }
  chrome();
  const [, page, arg] = (location.hash || "#/board").match(/^#\/?([^/]*)\/?(.*)$/) || [];
  show(el("p", { class: "muted" }, t("loading")));
  switch (page) {
    case "warning": return pageWarning(decodeURIComponent(arg));
    case "audience": return pageAudience();
    case "campaigns": return pageCampaigns();
    case "officers": return pageOfficers();
    case "grids": return pageGrids();
    case "login": location.hash = "#/board"; return;
    default: return pageBoard();
  }
}

document.getElementById("lang").addEventListener("click", () => {
  lang = lang === "en" ? "zh-CN" : "en";
  localStorage.setItem("wd.lang", lang);
  route();
});
document.getElementById("logout").addEventListener("click", logout);
window.addEventListener("hashchange", route);
route();
