// The rules studio page: renders the state the server computes (check, preview, suggestions, diff) and sends
// edits. No checking happens here: every message comes from the server, which runs `rules check`'s parser.
"use strict";

(function () {
  const token = document.querySelector('meta[name="csrf-token"]').content;
  const DEBOUNCE_MS = 300;
  let state = null;
  let queue = Promise.resolve();
  const timers = new Map(); // input id -> pending debounce timer
  let pendingPreviewId = null;

  const $ = (id) => document.getElementById(id);
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }
  function status(text, isError) {
    $("status").textContent = text;
    $("status").classList.toggle("error", !!isError);
  }

  // --- talking to the server: one request at a time, in order -----------------------------------------
  function post(url, body, versioned) {
    // The version is read when the request leaves, after the ones queued before it have been answered.
    const run = () => fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": token },
      body: JSON.stringify(versioned && state ? Object.assign({}, body, { version: state.version }) : (body || {})),
    }).then(async (response) => {
      const answer = await response.json().catch(() => ({ error: response.statusText }));
      if (answer.state) render(answer.state);
      if (!response.ok) throw Object.assign(new Error(answer.error || response.statusText), { answer });
      return answer;
    });
    const result = queue.then(run, run);
    queue = result.catch(() => {});
    return result;
  }
  function edit(operation) {
    return post("/api/edit", operation, true).then(
      () => status(editDone(operation)),
      (error) => status(error.message, true));
  }
  function editDone(operation) {
    return { set_cell: "checked", add_row: "row added", copy_row: "row copied", delete_row: "row deleted",
             move_row: "row moved", add_column: "column added" }[operation.op] || "done";
  }

  // --- rendering --------------------------------------------------------------------------------------
  function render(next) {
    const active = document.activeElement;
    const focusId = active && active.id ? active.id : null;
    const selection = active && typeof active.selectionStart === "number"
      ? [active.selectionStart, active.selectionEnd] : null;
    const typed = focusId && timers.has(focusId) ? active.value : null;
    state = next;
    renderHeader();
    renderDatalists();
    renderRows();
    renderCheck();
    renderDiff();
    if (focusId) {
      const again = $(focusId);
      if (again) {
        if (typed !== null) again.value = typed;
        again.focus();
        if (selection && typeof again.setSelectionRange === "function") {
          try { again.setSelectionRange(selection[0], selection[1]); } catch (e) { /* not a text input */ }
        }
      }
    }
  }

  function renderHeader() {
    $("sheet-path").textContent = state.path + (state.new_sheet ? " (new sheet: created on the first save)" : "")
      + (state.dirty ? " — unsaved changes" : " — saved");
    const sample = state.sample;
    $("sample-info").textContent = sample
      ? `Preview on ${sample.source}: ${sample.records.toLocaleString()} records` +
        ` (computed in ${state.preview_seconds} s)`
      : "No sample events (start with --events FILE or --lake DIR for the audience preview).";
    const head = $("sheet-head");
    head.replaceChildren(el("th", { scope: "col", text: "Row" }),
      ...state.header.map((label) => el("th", { scope: "col", text: label })),
      el("th", { scope: "col", text: "Actions" }));
    const adder = $("add-column-name");
    adder.replaceChildren(...state.addable_columns.map((name) => el("option", { value: name, text: name })));
    $("add-column").disabled = state.addable_columns.length === 0;
    $("deploy").disabled = !state.stack;
    $("deploy").title = state.stack ? `preview, then deploy to ${state.stack}` : "start the studio with --stack NAME";
  }

  function eventSeen(name) {
    const suggestions = state.suggestions;
    return suggestions ? suggestions.event_types.find((e) => e.event_type === name.trim()) : undefined;
  }

  function renderDatalists() {
    const lists = [];
    const suggestions = state.suggestions;
    if (suggestions) {
      lists.push(el("datalist", { id: "dl-events" }, ...suggestions.event_types.map((e) =>
        el("option", { value: e.event_type, label: `${e.count.toLocaleString()} events` }))));
    }
    state.rows.forEach((row) => {
      const seen = eventSeen(cellOf(row, "EventName"));
      const attribute = seen && seen.attributes.find((a) => a.name === cellOf(row, "AttributeName").trim());
      lists.push(el("datalist", { id: `dl-r${row.index}-attr` }, ...(seen ? seen.attributes : []).map((a) =>
        el("option", { value: a.name, label: `${a.count.toLocaleString()} events` }))));
      lists.push(el("datalist", { id: `dl-r${row.index}-value` }, ...(attribute ? attribute.values : []).map((v) =>
        el("option", { value: v.value, label: `${v.count.toLocaleString()} events${v.truncated ? " (cut)" : ""}` }))));
      lists.push(el("datalist", { id: `dl-r${row.index}-metric` }, ...(seen ? seen.metrics : []).map((m) =>
        el("option", { value: m[0], label: `${m[1].toLocaleString()} events` }))));
    });
    $("datalists").replaceChildren(...lists);
  }

  function cellOf(row, column) {
    const index = state.columns.indexOf(column);
    return index >= 0 && index < row.cells.length ? row.cells[index] : "";
  }

  function renderRows() {
    const body = $("sheet-body");
    body.replaceChildren(...state.rows.flatMap((row) => [renderRow(row), renderPreviewRow(row)]));
  }

  function renderRow(row) {
    const tr = el("tr", { "data-row": row.index, id: `row-${row.index}` });
    tr.append(el("th", { scope: "row", text: String(row.number) }));
    state.header.forEach((label, column) => tr.append(renderCell(row, label, column)));
    tr.append(renderActions(row));
    return tr;
  }

  function renderCell(row, label, column) {
    const canonical = state.columns[column];
    const value = column < row.cells.length ? row.cells[column] : "";
    const problems = row.problems.filter((p) => p.column_index === column);
    const warnings = row.warnings.filter((p) => p.column_index === column);
    const id = `cell-r${row.index}-c${column}`;
    const messageId = `msg-r${row.index}-c${column}`;
    const common = {
      id, "data-row": row.index, "data-column": label,
      "aria-label": `row ${row.number}, ${label}`,
      "aria-invalid": problems.length ? "true" : null,
      "aria-describedby": problems.length || warnings.length ? messageId : null,
    };
    const classes = [problems.length ? "bad" : "", state.date_columns.includes(canonical) ? "date-cell" : ""];
    const td = el("td", { class: classes.join(" ").trim() || null });
    let input;
    const choices = canonical && state.choices[canonical];
    if (choices) {
      input = el("select", common);
      const options = [""].concat(choices);
      if (!options.includes(value)) options.push(value);
      for (const option of options) input.append(el("option", { value: option, text: option || "(empty)" }));
      input.value = value;
      input.addEventListener("change", () => edit({ op: "set_cell", row: row.index, column, value: input.value }));
      td.append(input);
    } else {
      const list = { EventName: "dl-events", AttributeName: `dl-r${row.index}-attr`,
                     AttributeValue: `dl-r${row.index}-value`, MetricName: `dl-r${row.index}-metric` }[canonical];
      const size = { EventName: "wide", RuleId: "wide", "Target-C": "narrow", "Target-V": "narrow",
                     Window: "narrow", StartDate: "date", FinishDate: "date" }[canonical];
      input = el("input", Object.assign({ type: "text", list: state.suggestions ? list : null, class: size }, common));
      input.value = value;
      input.addEventListener("input", () => debounce(input, row.index, column));
      input.addEventListener("change", () => flush(input, row.index, column));
      td.append(input);
      if (state.date_columns.includes(canonical)) {
        const picker = el("input", { type: "date", id: `date-r${row.index}-c${column}`,
                                     "aria-label": `pick a date for row ${row.number}, ${label}` });
        if (/^\d{4}-\d{2}-\d{2}$/.test(value.trim())) picker.value = value.trim();
        picker.addEventListener("change", () => {
          if (!picker.value) return;
          input.value = picker.value;
          edit({ op: "set_cell", row: row.index, column, value: picker.value });
        });
        td.append(picker);
      }
    }
    if (problems.length || warnings.length) {
      td.append(el("div", { id: messageId, "data-row": row.index, "data-column": label, role: "alert" },
        ...problems.map((p) => el("div", { class: "msg", text: p.text })),
        ...warnings.map((p) => el("div", { class: "warn", text: "warning: " + p.text }))));
    }
    return td;
  }

  function debounce(input, row, column) {
    clearTimeout(timers.get(input.id));
    timers.set(input.id, setTimeout(() => flush(input, row, column), DEBOUNCE_MS));
  }
  function flush(input, row, column) {
    if (!timers.has(input.id)) return;
    clearTimeout(timers.get(input.id));
    timers.delete(input.id);
    status("checking…");
    edit({ op: "set_cell", row, column, value: input.value });
  }

  function renderPreviewRow(row) {
    const td = el("td", { class: "preview", id: `preview-r${row.index}`, "data-row": row.index,
                          colspan: state.header.length + 1 });
    return el("tr", { class: "preview-row", "aria-label": `preview of row ${row.number}` },
      el("th", { scope: "row", class: "preview-label", text: "↳" }), renderPreview(row, td));
  }

  function renderPreview(row, td) {
    const rowProblems = row.problems.filter((p) => p.column_index === null || p.column_index === undefined);
    if (rowProblems.length) {
      td.append(el("div", { id: `msg-r${row.index}-row`, "data-row": row.index, role: "alert" },
        ...rowProblems.map((p) => el("div", { class: "msg", text: p.text }))));
    }
    if (row.blank) { td.append("blank row (skipped)"); return td; }
    if (!row.rule_id) { td.append(el("span", { text: "no preview until the row is fixed" })); return td; }
    const preview = state.previews[row.rule_id];
    td.append(el("span", { class: "rule-id", text: `rule ${row.rule_id}` }));
    if (!preview) return td;
    const fires = preview.resets ? `, fires ${preview.qualifications.toLocaleString()} times` : "";
    td.append(el("span", { class: "numbers", "data-users": preview.users, "data-fires": preview.qualifications,
      text: `${preview.users.toLocaleString()} users qualify${fires}` }));
    td.append(el("span", { class: "counted", text: `(${preview.users_counted.toLocaleString()} counted)` }));
    td.append(sparkline(preview.per_day, row));
    if (preview.examples.length) {
      td.append(el("span", { class: "examples-label", text: "e.g." }),
        el("ul", { class: "examples", "aria-label": "example users" }, ...preview.examples.map((e) =>
          el("li", { text: `${e.user_id} (${e.qualifications}×, count ${e.count}, sum ${e.sum})` }))));
    }
    return td;
  }

  function sparkline(perDay, row) {
    const ns = "http://www.w3.org/2000/svg";
    const width = 220, height = 22;
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
    svg.setAttribute("role", "img");
    const total = perDay.reduce((sum, day) => sum + day[1], 0);
    const label = perDay.length
      ? `qualifications per day, ${perDay[0][0]} to ${perDay[perDay.length - 1][0]}: ${total} in all`
      : "no qualifications";
    svg.setAttribute("aria-label", `row ${row.number}: ${label}`);
    const title = document.createElementNS(ns, "title");
    title.textContent = perDay.map((d) => `${d[0]}: ${d[1]}`).join("\n") || label;
    svg.append(title);
    if (perDay.length) {
      const first = Date.parse(perDay[0][0]), last = Date.parse(perDay[perDay.length - 1][0]);
      const days = Math.round((last - first) / 86400000) + 1;
      const max = Math.max(...perDay.map((d) => d[1]));
      const bar = width / Math.max(days, 1);
      for (const [day, count] of perDay) {
        const x = Math.round((Date.parse(day) - first) / 86400000) * bar;
        const h = Math.max(1, Math.round((count / max) * (height - 2)));
        const rect = document.createElementNS(ns, "rect");
        rect.setAttribute("x", x.toFixed(1));
        rect.setAttribute("y", height - h);
        rect.setAttribute("width", Math.max(1, bar - 1).toFixed(1));
        rect.setAttribute("height", h);
        rect.setAttribute("fill", "#3b6ea8");
        svg.append(rect);
      }
    }
    return svg;
  }

  function renderActions(row) {
    const last = state.rows.length - 1;
    const button = (text, label, op, disabled) => el("button", { type: "button", "aria-label": `${label} row ${row.number}`,
      disabled, onclick: () => edit(op) }, text);
    return el("td", { class: "row-actions" },
      button("Copy", "copy", { op: "copy_row", row: row.index }),
      button("Delete", "delete", { op: "delete_row", row: row.index }),
      button("↑", "move up", { op: "move_row", row: row.index, to: row.index - 1 }, row.index === 0),
      button("↓", "move down", { op: "move_row", row: row.index, to: row.index + 1 }, row.index === last));
  }

  function renderCheck() {
    const problems = state.rows.reduce((n, row) => n + row.problems.length, 0) + state.header_problems.length;
    $("check-summary").textContent = state.accepted
      ? "The sheet is accepted: `rules check` and a deployment would take it."
      : `${problems} problem(s): the sheet would not be accepted; the valid rows keep their preview.`;
    $("sheet-problems").replaceChildren(...state.lines.map((line) => el("li", { text: line })));
  }

  function changeItem(change) {
    return el("li", { "data-kind": change.kind },
      el("strong", { text: `${change.kind} ${change.rule_id}` }),
      change.resets_counters ? el("span", { class: "resets", text: " (resets counters)" }) : null,
      `: ${change.explanation}`);
  }
  function renderDiff() {
    const disk = state.diff_disk;
    $("diff-disk").replaceChildren(...(disk.length ? disk.map(changeItem) : [el("li", { text: "no change" })]));
    $("stack-diff-section").hidden = !state.stack;
    if (state.stack) {
      $("stack-diff-title").textContent = `Against stack ${state.stack}'s published rules`;
      const items = state.stack_error ? [el("li", { class: "msg", text: state.stack_error })]
        : (state.diff_stack.length ? state.diff_stack.map(changeItem) : [el("li", { text: "no change" })]);
      $("diff-stack").replaceChildren(...items);
    }
  }

  // --- buttons ----------------------------------------------------------------------------------------
  function flushAll() {
    for (const id of Array.from(timers.keys())) {
      const input = $(id);
      if (input) flush(input, Number(input.dataset.row), state.header.indexOf(input.dataset.column));
    }
  }
  $("save").addEventListener("click", () => {
    flushAll();
    post("/api/save").then((answer) => status(answer.result), (error) => status(error.message, true));
  });
  $("add-row").addEventListener("click", () => edit({ op: "add_row" }));
  $("add-column").addEventListener("click", () => edit({ op: "add_column", column: $("add-column-name").value }));
  $("deploy").addEventListener("click", () => {
    flushAll();
    $("deploy-panel").hidden = false;
    $("deploy-confirm").hidden = true;
    $("deploy-result").textContent = "running pulumi preview…";
    post("/api/deploy/preview").then((answer) => {
      const result = answer.result;
      pendingPreviewId = result.preview_id;
      const summary = Object.entries(result.change_summary).map(([op, n]) => `${op}: ${n}`).join(", ") || "no change";
      const config = Object.keys(result.config_changes).join(", ") || "none";
      $("deploy-result").textContent = `pulumi preview: ${summary}; config keys changed: ${config}.`;
      $("deploy-confirm").hidden = false;
      $("deploy-cancel").hidden = false;
      $("deploy-confirm").focus();
    }, deployFailed);
  });
  $("deploy-confirm").addEventListener("click", () => {
    $("deploy-confirm").hidden = true;
    $("deploy-result").textContent = "running pulumi up…";
    post("/api/deploy/up", { preview_id: pendingPreviewId }).then((answer) => {
      $("deploy-result").textContent = `pulumi up: ${answer.result.result}`;
      status("deployed");
    }, deployFailed);
  });
  $("deploy-cancel").addEventListener("click", () => {
    pendingPreviewId = null;
    $("deploy-panel").hidden = true;
  });
  function deployFailed(error) {
    const answer = error.answer || {};
    const out = $("deploy-result");
    out.replaceChildren(el("p", { class: "msg", text: error.message }));
    if (answer.pulumi_missing) {
      out.append(el("p", {}, `The sheet is saved at ${answer.csv}; deploy it later, or `,
        el("a", { href: "/api/sheet.csv", download: "" }, "download the CSV"), "."));
    }
    status(error.message, true);
  }

  fetch("/api/state").then((response) => response.json()).then((first) => {
    render(first);
    status("ready");
  }, (error) => status(`could not load the sheet: ${error.message}`, true));
})();
