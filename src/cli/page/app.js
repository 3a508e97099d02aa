// The rule tester page of `dyngroups serve`: plain JavaScript over the
// server's JSON API (docs/api.md), no build step. Every text from the
// server goes into the page as text, never as markup.
"use strict";

const token = new URLSearchParams(location.hash.slice(1)).get("token");
const $ = (id) => document.getElementById(id);

/** Calls the API; resolves to [status, body]. */
async function call(method, path, body, signal) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
  });
  return [response.status, await response.json()];
}

/** An element with text and class. */
function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function percent(share) {
  return `${(share * 100).toFixed(share < 0.001 && share > 0 ? 3 : 1)}%`;
}

// ---- completion -------------------------------------------------------

let words = []; // [{word, kind}]
const completion = { items: [], selected: 0, start: 0 };

function wordBeforeCaret(textarea) {
  const upto = textarea.value.slice(0, textarea.selectionStart);
  const match = /[A-Za-z_][A-Za-z0-9_]*$/.exec(upto);
  return match ? { word: match[0], start: upto.length - match[0].length } : null;
}

function showCompletions() {
  const list = $("completions");
  const textarea = $("rule");
  const before = wordBeforeCaret(textarea);
  completion.items = before
    ? words.filter((w) => w.word.startsWith(before.word) && w.word !== before.word).slice(0, 12)
    : [];
  list.replaceChildren();
  if (completion.items.length === 0) {
    list.hidden = true;
    return;
  }
  completion.start = before.start;
  completion.selected = 0;
  completion.items.forEach((item, i) => {
    const li = element("li", item.word);
    li.setAttribute("role", "option");
    li.append(element("small", item.kind));
    li.addEventListener("mousedown", (event) => {
      event.preventDefault();
      completion.selected = i;
      acceptCompletion();
    });
    list.append(li);
  });
  markSelected();
  const lines = textarea.value.slice(0, textarea.selectionStart).split("\n").length;
  list.style.top = `${Math.min(lines, textarea.rows) * 1.4 + 0.6}rem`;
  list.hidden = false;
}

function markSelected() {
  [...$("completions").children].forEach((li, i) =>
    li.setAttribute("aria-selected", String(i === completion.selected)),
  );
}

function acceptCompletion() {
  const textarea = $("rule");
  const item = completion.items[completion.selected];
  const caret = textarea.selectionStart;
  textarea.value = textarea.value.slice(0, completion.start) + item.word + textarea.value.slice(caret);
  const at = completion.start + item.word.length;
  textarea.setSelectionRange(at, at);
  $("completions").hidden = true;
  ruleChanged();
}

// ---- check and preview, as the admin types ----------------------------

const DEBOUNCE_MS = 200;
let typingTimer = 0;
let latest = 0; // the number of the newest rule typed
let previewing = null; // the AbortController of the preview in flight
let lastTested = ""; // the last rule that checked without errors

function ruleChanged() {
  clearTimeout(typingTimer);
  typingTimer = setTimeout(testRule, DEBOUNCE_MS);
}

async function testRule() {
  const rule = $("rule").value;
  const mine = ++latest;
  if (previewing) previewing.abort();
  if (rule.trim() === "") {
    showDiagnostics([]);
    $("count").textContent = "";
    $("sample").hidden = true;
    return;
  }
  const [, checked] = await call("POST", "/api/check", { rule });
  if (mine !== latest) return; // a newer rule was typed meanwhile
  showDiagnostics(checked.diagnostics || []);
  if (!checked.ok) {
    $("count").textContent = "";
    $("sample").hidden = true;
    return;
  }
  previewing = new AbortController();
  $("count").textContent = "evaluating…";
  try {
    const [status, preview] = await call("POST", "/api/preview", { rule, sample: 10 }, previewing.signal);
    if (mine !== latest) return;
    if (status !== 200) {
      $("count").replaceChildren(element("span", preview.error.message, "error"));
      return;
    }
    lastTested = rule;
    showPreview(preview);
  } catch (error) {
    if (error.name !== "AbortError") throw error;
  }
}

function showDiagnostics(diagnostics) {
  const box = $("diagnostics");
  box.textContent = diagnostics.map((d) => d.rendered).join("\n");
  box.className = diagnostics.every((d) => d.severity === "warning") ? "warning" : "";
}

function showPreview(preview) {
  const count = $("count");
  count.replaceChildren(
    element("strong", preview.matched.toLocaleString("en")),
    ` of ${preview.users.toLocaleString("en")} users (${percent(preview.share)}) · ${preview.elapsed_ms.toFixed(1)} ms`,
  );
  const table = $("sample");
  const head = document.createElement("tr");
  preview.sample.columns.forEach((c) => head.append(element("th", c)));
  table.tHead.replaceChildren(head);
  table.tBodies[0].replaceChildren(
    ...preview.sample.rows.map((cells) => {
      const row = document.createElement("tr");
      cells.forEach((cell) => row.append(element("td", cell ?? "")));
      return row;
    }),
  );
  table.hidden = preview.sample.rows.length === 0;
}

// ---- explain -------------------------------------------------------------

function treeNode(node) {
  const li = document.createElement("li");
  li.append(element("span", node.verdict ? "true" : "false", `verdict ${node.verdict ? "yes" : "no"}`));
  li.append(element("span", node.label));
  if (node.values.length) li.append(element("span", node.values.join(", "), "values"));
  if (node.children.length) {
    const ul = document.createElement("ul");
    ul.append(...node.children.map(treeNode));
    li.append(ul);
  }
  return li;
}

async function explainUser(event) {
  event.preventDefault();
  const verdict = $("explain-verdict");
  const tree = $("explain-tree");
  tree.replaceChildren();
  const rule = lastTested || $("rule").value;
  const userId = Number($("explain-user").value.trim());
  if (!rule.trim()) {
    verdict.textContent = "type a rule first";
    return;
  }
  const [status, body] = await call("POST", "/api/explain", { rule, user_id: userId, depth: 1 });
  if (status !== 200) {
    verdict.replaceChildren(element("span", body.error.message, "error"));
    return;
  }
  verdict.replaceChildren(
    element("strong", `User ${body.user_id} is ${body.member ? "caught" : "not caught"} by the rule`, body.member ? "yes" : "no"),
  );
  const ul = element("ul", undefined, "tree");
  ul.append(treeNode(body.root));
  tree.append(ul);
}

// ---- groups and a user's groups ------------------------------------------

async function showGroup(key) {
  const detail = $("group-detail");
  detail.textContent = `evaluating ${key}…`;
  const [status, group] = await call("GET", `/api/groups/${encodeURIComponent(key)}`);
  if (status !== 200) {
    detail.replaceChildren(element("span", group.error.message, "error"));
    return;
  }
  const parts = [element("strong", `${group.name} (${group.key}, ${group.status})`), element("br")];
  parts.push(`${group.members.toLocaleString("en")} members · ${group.elapsed_ms.toFixed(1)} ms`);
  if (group.sample.rows.length) {
    parts.push(element("br"), `first members: ${group.sample.rows.map((r) => r.slice(0, 2).join(" ")).join(", ")}`);
  }
  if (group.changes) {
    const c = group.changes;
    parts.push(element("br"), element("span", `+${c.added}`, "yes"), " ", element("span", `-${c.removed}`, "no"));
    parts.push(" against the last committed run");
    if (c.added_sample.length) parts.push(element("br"), `added: ${c.added_sample.join(", ")}`);
    if (c.removed_sample.length) parts.push(element("br"), `removed: ${c.removed_sample.join(", ")}`);
  }
  detail.replaceChildren(...parts);
}

async function showUserGroups(event) {
  event.preventDefault();
  const out = $("user-groups-result");
  const id = $("user-groups-user").value.trim();
  const [status, body] = await call("GET", `/api/users/${encodeURIComponent(id)}/groups`);
  if (status !== 200) {
    out.replaceChildren(element("span", body.error.message, "error"));
    return;
  }
  if (body.groups.length === 0) {
    out.textContent = `user ${body.user_id} is in no group after the last committed run`;
    return;
  }
  const ul = document.createElement("ul");
  ul.append(...body.groups.map((g) => element("li", `${g.name} (${g.key}) — ${g.why}`)));
  out.replaceChildren(ul);
}

// ---- start ---------------------------------------------------------------

async function start() {
  // Listen first: an admin may type before the fields arrive.
  const textarea = $("rule");
  textarea.addEventListener("input", () => {
    showCompletions();
    ruleChanged();
  });
  textarea.addEventListener("keydown", (event) => {
    if ($("completions").hidden) return;
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      const n = completion.items.length;
      completion.selected = (completion.selected + (event.key === "ArrowDown" ? 1 : n - 1)) % n;
      markSelected();
    } else if (event.key === "Tab" || event.key === "Enter") {
      event.preventDefault();
      acceptCompletion();
    } else if (event.key === "Escape") {
      $("completions").hidden = true;
    }
  });
  textarea.addEventListener("blur", () => ($("completions").hidden = true));
  $("explain-form").addEventListener("submit", explainUser);
  $("user-groups-form").addEventListener("submit", showUserGroups);

  const [status, fields] = await call("GET", "/api/fields");
  if (status !== 200) {
    $("about").replaceChildren(element("span", fields.error.message, "error"));
    return;
  }
  const usable = fields.fields.filter((f) => f.usable);
  $("about").textContent =
    `${fields.users.toLocaleString("en")} users · fields: ` +
    usable.map((f) => (f.table === "users" ? f.name : `${f.table}.${f.name}`)).join(", ");
  words = [
    ...usable.map((f) => ({ word: f.name, kind: `${f.table} ${f.type}` })),
    ...fields.keywords.map((k) => ({ word: k.replace(/\($/, ""), kind: "keyword" })),
    ...fields.groups.map((g) => ({ word: g, kind: "group" })),
  ];

  const [, groups] = await call("GET", "/api/groups");
  $("groups-note").textContent = groups.groups.length
    ? groups.has_state
      ? "Click a group: its members now, and its changes against the last committed run."
      : "Click a group: its members now (start the server with --state for its changes)."
    : "Start the server with --rules FILE to list its groups.";
  $("group-list").replaceChildren(
    ...groups.groups.map((g) => {
      const li = document.createElement("li");
      const button = element("button", g.key, `status-${g.status}`);
      button.type = "button";
      button.title = g.name;
      button.addEventListener("click", () => showGroup(g.key));
      li.append(button);
      return li;
    }),
  );

}

start();
