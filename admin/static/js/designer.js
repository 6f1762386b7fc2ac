// The flow designer: a LogicFlow canvas (palette, controls), a side panel for the selected step
// and the flow's own settings, and the YAML beside them. The server owns the conversion: every
// canvas edit is posted as graph JSON and comes back as YAML (POST api/yaml), every YAML edit is
// posted as text and comes back as a graph (POST api/graph), both with located problems, which
// are shown on their node or edge and in a list. Transitions live only on edges, so the panel's
// "next step" selectors create and delete edges.
// No inline script and no inline style: the page's CSP allows neither (see admin/designer_page.py).
(function () {
  "use strict";

  // LogicFlow shapes by step type until the palette says otherwise (rect for the rest)
  var SHAPES = { decision: "diamond", parallel: "diamond", wait: "ellipse", end: "circle" };
  var KINDS = ["task", "action", "decision", "parallel", "join", "wait", "set", "update_customer",
    "assign_owner", "subflow", "end"];
  // step types without a "next": their ways out are cases, branches, or none
  var NO_NEXT = { decision: true, parallel: true, end: true };
  var UNITS = ["minutes", "hours", "days", "weeks", "business_days", "business_hours"];
  var ERROR_STYLE = { stroke: "#dc3545", strokeWidth: 3 };
  var TRIGGERS = ["manual", "form", "schedule", "date", "customer_event", "segment"];

  var root, S, URLS, LANG, lf;
  var palette = { steps: [], triggers: [], forms: [], connectors: [], roles: [] };
  var flow = {};            // the flow's own settings (graph.flow)
  var source = "";          // the YAML the page shows and sends back (keeps comments)
  var order = [];           // step ids in YAML order
  var selected = null;      // selected node id, or null for the flow settings
  var lastSent = null;      // signature of the graph last sent or received
  var canvasTimer = null, yamlTimer = null, seq = 0, inflight = Promise.resolve();
  var problems = [];
  var yamlBroken = false;   // the YAML text cannot be read: the canvas shows the last readable one
  var readable = "";        // the last YAML text that could be read
  var marked = [];          // ids carrying a problem mark

  function t(key, vars) {
    var text = Object.prototype.hasOwnProperty.call(S, key) ? S[key] : key;
    if (vars) {
      text = text.replace(/%\((\w+)\)s/g, function (_m, name) { return String(vars[name]); });
    }
    return text;
  }

  function csrfToken() {
    try {
      return JSON.parse(document.body.getAttribute("hx-headers:inherited") || "{}")["X-CSRFToken"] || "";
    } catch (e) {
      return "";
    }
  }

  function request(url, body) {
    var init = { credentials: "same-origin", headers: { Accept: "application/json" } };
    if (body !== undefined) {
      init.method = "POST";
      init.headers["Content-Type"] = "application/json";
      init.headers["X-CSRFToken"] = csrfToken();
      init.body = JSON.stringify(body);
    }
    return fetch(url, init).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        return { status: response.status, data: data };
      });
    });
  }

  function status(text) {
    document.getElementById("designer-status").textContent = text || "";
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      var value = attrs[name];
      if (value === null || value === undefined || value === false) { return; }
      if (name === "text") { node.textContent = value; } else if (name.slice(0, 2) === "on") {
        node.addEventListener(name.slice(2), value);
      } else { node.setAttribute(name, value === true ? "" : value); }
    });
    (children || []).forEach(function (child) { if (child) { node.appendChild(child); } });
    return node;
  }

  function copy(value) { return value === undefined ? undefined : JSON.parse(JSON.stringify(value)); }

  function localized(text) {
    if (typeof text === "string") { return text; }
    if (text && typeof text === "object") { return text[LANG] || text.zh || text.en || ""; }
    return "";
  }

  /* ---------------------------------------------------------------- graph <-> server */

  function nodeText(id, step) {
    return localized(step && step.name) || id;
  }

  function edgeLabel(props) {
    if (props.kind === "case") { return props.when || ""; }
    if (props.kind === "default") { return t("otherwise"); }
    if (props.kind === "on_timeout") { return t("timeout"); }
    if (props.kind === "timeout_next") { return t("overdue"); }
    if (props.kind === "send_back_to") { return t("send_back"); }
    return "";
  }

  // The graph as the server reads it: kinds, steps and positions; no marks or styles.
  function currentGraph() {
    var data = lf.getGraphRawData();
    var byId = {};
    data.nodes.forEach(function (n) { byId[n.id] = n; });
    order = order.filter(function (id) { return byId[id]; });
    data.nodes.forEach(function (n) { if (order.indexOf(n.id) < 0) { order.push(n.id); } });
    var nodes = order.map(function (id) {
      var n = byId[id];
      var props = n.properties || {};
      return { id: id, type: n.type, x: Math.round(n.x), y: Math.round(n.y), text: nodeText(id, props.step),
        properties: { kind: props.kind, step: props.step || {} } };
    });
    var edges = data.edges.map(function (e) {
      var props = e.properties || {};
      var out = { kind: props.kind || "next" };
      if (props.when !== undefined) { out.when = props.when; }
      if (props.order !== undefined) { out.order = props.order; }
      return { id: e.id, sourceNodeId: e.sourceNodeId, targetNodeId: e.targetNodeId, text: edgeLabel(out), properties: out };
    });
    return { flow: flow, nodes: nodes, edges: edges };
  }

  function toCanvas(graph) {
    return {
      nodes: graph.nodes.map(function (n) {
        var kind = n.properties.kind;
        return { id: n.id, type: n.type || SHAPES[kind] || "rect", x: n.x, y: n.y, text: nodeText(n.id, n.properties.step),
          properties: { kind: kind, step: n.properties.step || {} } };
      }),
      edges: graph.edges.map(function (e) {
        return { id: e.id, type: "polyline", sourceNodeId: e.sourceNodeId, targetNodeId: e.targetNodeId,
          text: e.text || edgeLabel(e.properties || {}), properties: e.properties || { kind: "next" } };
      }),
    };
  }

  function signature(graph) { return JSON.stringify(graph); }

  // Draws a graph that came from the server without echoing it back as a canvas edit.
  function showGraph(graph) {
    flow = graph.flow || {};
    order = graph.nodes.map(function (n) { return n.id; });
    lf.render(toCanvas(graph));
    marked = [];
    lastSent = signature(currentGraph());
    if (selected && !lf.getNodeModelById(selected)) { selected = null; }
    document.getElementById("designer-title").textContent = flow.id || "";
    renderPanel();
  }

  function canvasChanged() {
    window.clearTimeout(canvasTimer);
    canvasTimer = window.setTimeout(sendGraph, 300);
  }

  function sendGraph() {
    canvasTimer = null;
    var graph = currentGraph();
    var sig = signature(graph);
    if (sig === lastSent) { return Promise.resolve(); }
    lastSent = sig;
    var mine = ++seq;
    status(t("saving"));
    root.setAttribute("data-busy", "1");
    // while the YAML text cannot be read, the canvas (its last readable version) is written into
    // the last readable text instead: the canvas edit replaces the broken text
    return inflight = request(URLS.yaml, { graph: graph, source: yamlBroken ? readable : source }).then(function (answer) {
      if (mine !== seq) { return; }
      root.removeAttribute("data-busy");
      if (answer.status === 200) {
        source = readable = answer.data.source || "";
        yamlBroken = false;
        document.getElementById("yaml").value = source;
        document.getElementById("yaml-error").textContent = "";
        showProblems(answer.data.problems || []);
        status("");
      } else if (answer.data && answer.data.problems) {
        showProblems(answer.data.problems);
        status("");
      } else {
        status(t("request_failed", { status: answer.status }));
      }
    });
  }

  function yamlChanged() {
    window.clearTimeout(yamlTimer);
    root.setAttribute("data-busy", "1");
    yamlTimer = window.setTimeout(sendYaml, 600);
  }

  function sendYaml() {
    yamlTimer = null;
    var text = document.getElementById("yaml").value;
    var mine = ++seq;
    status(t("saving"));
    return inflight = request(URLS.graph, { source: text }).then(function (answer) {
      if (mine !== seq) { return; }
      root.removeAttribute("data-busy");
      status("");
      source = text;
      yamlBroken = answer.status !== 200;
      if (answer.status === 200) {
        readable = text;
        document.getElementById("yaml-error").textContent = "";
        showGraph(answer.data.graph);
        showProblems(answer.data.problems || []);
      } else if (answer.data && answer.data.problems) {
        document.getElementById("yaml-error").textContent = t("yaml_invalid");
        showProblems(answer.data.problems);
      } else {
        status(t("request_failed", { status: answer.status }));
      }
    });
  }

  // Brings both sides up to date before publishing or a dry run: a pending YAML edit is read,
  // otherwise the canvas is written to YAML once more, so what is published is what is drawn.
  // A YAML text that cannot be read is left as it is (the server then names its problems).
  function settled() {
    if (yamlTimer) { window.clearTimeout(yamlTimer); return sendYaml(); }
    window.clearTimeout(canvasTimer);
    canvasTimer = null;
    return inflight.then(function () {
      if (yamlBroken) { return null; }
      lastSent = null;
      return sendGraph();
    });
  }

  /* ---------------------------------------------------------------- problems */

  function elementModel(id) { return lf.getNodeModelById(id) || lf.getEdgeModelById(id); }

  // A problem marks its node or edge through the model's style, which the shapes registered in
  // init() draw over the theme. Styles are not graph data, so marks are not undo steps: Undo
  // takes back the user's edit, not the red frame the check put on it.
  function showProblems(list) {
    problems = list;
    var perElement = {};
    list.forEach(function (p) {
      var id = p.node || p.edge;
      if (id && elementModel(id)) { (perElement[id] = perElement[id] || []).push(p.message); }
    });
    marked.forEach(function (id) {
      var model = elementModel(id);
      if (model && !perElement[id]) { model.updateStyles({}); model.problem = null; }
    });
    marked = Object.keys(perElement);
    marked.forEach(function (id) {
      var model = elementModel(id);
      model.setStyles(ERROR_STYLE);
      model.problem = perElement[id].join("\n");
    });
    var ul = document.getElementById("problems");
    ul.textContent = "";
    if (!list.length) {
      ul.appendChild(el("li", { class: "list-group-item text-success", text: t("no_problems") }));
    }
    list.forEach(function (p) {
      var where = p.node || p.edge || "";
      var label = (where ? where + ": " : "") + p.message + (p.line ? " (" + t("line") + " " + p.line + ")" : "");
      var item = el("li", { class: "list-group-item list-group-item-danger", "data-node": p.node || null, "data-edge": p.edge || null });
      if (p.node && lf.getNodeModelById(p.node)) {
        item.appendChild(el("button", { type: "button", class: "btn btn-link btn-sm p-0 text-start", text: label,
          onclick: function () { select(p.node); } }));
      } else {
        item.textContent = label;
      }
      ul.appendChild(item);
    });
    root.setAttribute("data-problems", String(list.length));
    renderPanelProblems();
  }

  /* ---------------------------------------------------------------- editing the canvas */

  function uniqueId(base) {
    var id = base, n = 1;
    while (lf.getNodeModelById(id)) { n += 1; id = base + "_" + n; }
    return id;
  }

  function outEdges(id, kind) {
    return lf.getGraphRawData().edges.filter(function (e) {
      return e.sourceNodeId === id && (!kind || (e.properties || {}).kind === kind);
    });
  }

  function connect(source_, target, props) {
    lf.addEdge({ type: "polyline", sourceNodeId: source_, targetNodeId: target, properties: props, text: edgeLabel(props) });
  }

  // Replaces the edges of one kind leaving a node by one edge to target (or none).
  function setTarget(id, kind, target) {
    outEdges(id, kind).forEach(function (e) { lf.deleteEdge(e.id); });
    if (target) { connect(id, target, { kind: kind }); }
  }

  function freeSpot(x, y) {
    var nodes = lf.getGraphRawData().nodes;
    function taken(px, py) {
      return nodes.some(function (n) { return Math.abs(n.x - px) < 150 && Math.abs(n.y - py) < 70; });
    }
    while (taken(x, y)) { x += 200; }
    return [x, y];
  }

  // Click-to-add (mouse or keyboard): below the selected step, joined to it when it has a free way out.
  function addStep(kind, at) {
    var id = uniqueId(kind);
    var after = selected && lf.getNodeModelById(selected);
    var spot;
    if (at) { spot = at; } else if (after) { spot = freeSpot(after.x, after.y + 120); } else {
      var nodes = lf.getGraphRawData().nodes;
      var lowest = nodes.reduce(function (m, n) { return Math.max(m, n.y); }, -60);
      spot = freeSpot(nodes.length ? nodes[0].x : 260, lowest + 120);
    }
    lf.addNode({ id: id, type: SHAPES[kind] || "rect", x: spot[0], y: spot[1], text: id, properties: { kind: kind, step: {} } });
    order.push(id);
    if (after) {
      var from = after.properties.kind;
      if (!(from in NO_NEXT) && !outEdges(selected, "next").length) { connect(selected, id, { kind: "next" }); }
    }
    select(id);
    canvasChanged();
    return id;
  }

  function select(id) {
    selected = id;
    lf.clearSelectElements();
    if (id) { lf.selectElementById(id); }
    renderPanel();
  }

  function updateStep(id, change) {
    var props = lf.getProperties(id) || {};
    var step = copy(props.step || {});
    change(step);
    lf.setProperties(id, { step: step });
    lf.updateText(id, nodeText(id, step));
    canvasChanged();
  }

  function renameStep(oldId, newId) {
    if (!newId || newId === oldId || lf.getNodeModelById(newId) || !/^[a-z][a-z0-9_]{0,63}$/.test(newId)) { return false; }
    lf.changeNodeId(oldId, newId);
    order = order.map(function (id) { return id === oldId ? newId : id; });
    var step = (lf.getProperties(newId) || {}).step;
    if (!localized(step && step.name)) { lf.updateText(newId, newId); }
    selected = newId;
    canvasChanged();
    return true;
  }

  // Rows by distance from the first step, file order within a row (as the server lays out a flow
  // without a layout block); the graph is drawn again so that every connection is routed anew.
  function autoLayout() {
    var graph = currentGraph();
    if (!graph.nodes.length) { return; }
    var ids = graph.nodes.map(function (n) { return n.id; });
    var first = flow.start && ids.indexOf(flow.start) >= 0 ? flow.start : ids[0];
    var depth = {}, queue = [first];
    depth[first] = 0;
    while (queue.length) {
      var id = queue.shift();
      graph.edges.forEach(function (e) {
        if (e.sourceNodeId === id && depth[e.targetNodeId] === undefined) {
          depth[e.targetNodeId] = depth[id] + 1;
          queue.push(e.targetNodeId);
        }
      });
    }
    var bottom = Math.max.apply(null, Object.keys(depth).map(function (k) { return depth[k]; })) + 1;
    var rows = {};
    ids.forEach(function (nid) {
      var row = depth[nid] === undefined ? bottom : depth[nid];
      (rows[row] = rows[row] || []).push(nid);
    });
    var widest = Math.max.apply(null, Object.keys(rows).map(function (r) { return rows[r].length; }));
    var at = {};
    Object.keys(rows).forEach(function (r) {
      rows[r].forEach(function (nid, col) {
        at[nid] = [120 + col * 220 + (widest - rows[r].length) * 110, 60 + Number(r) * 120];
      });
    });
    graph.nodes.forEach(function (n) { n.x = at[n.id][0]; n.y = at[n.id][1]; });
    lf.render(toCanvas(graph));
    marked = [];
    showProblems(problems);
    if (selected) { lf.selectElementById(selected); }
    fit();
    canvasChanged();
  }

  // Fits the flow into the canvas, never larger than life, and nudges it clear of the palette
  // (left) and the controls (bottom).
  function fit() {
    lf.fitView(160, 300);
    if (lf.getTransform().SCALE_X > 1) {
      lf.resetZoom();
      lf.translateCenter();
    }
    lf.translate(50, -30);
  }

  /* ---------------------------------------------------------------- panel widgets */

  var fieldSeq = 0;

  function field(label, control, help) {
    var id = control.id || ("f" + (++fieldSeq));
    control.id = id;
    return el("div", { class: "mb-2" }, [el("label", { class: "form-label small mb-0", for: id, text: label }), control,
      help ? el("div", { class: "form-text", text: help }) : null]);
  }

  function input(value, onchange, attrs) {
    var box = el("input", Object.assign({ class: "form-control form-control-sm", type: "text" }, attrs || {}));
    box.value = value === undefined || value === null ? "" : String(value);
    box.addEventListener("change", function () { onchange(box.value); });
    return box;
  }

  function selectBox(options, value, onchange, attrs) {
    var box = el("select", Object.assign({ class: "form-select form-select-sm" }, attrs || {}));
    options.forEach(function (o) {
      var option = el("option", { value: o[0], text: o[1] });
      if (String(o[0]) === String(value === undefined || value === null ? "" : value)) { option.selected = true; }
      box.appendChild(option);
    });
    box.addEventListener("change", function () { onchange(box.value); });
    return box;
  }

  function setOrDelete(obj, key, value) {
    if (value === "" || value === null || value === undefined) { delete obj[key]; } else { obj[key] = value; }
  }

  // name/title as {zh, en}; a plain string stays a string until it is edited
  function i18nFields(container, obj, key, labelZh, labelEn, commit) {
    var value = obj[key];
    var zh = typeof value === "string" ? value : (value && value.zh) || "";
    var en = typeof value === "string" ? "" : (value && value.en) || "";
    function write() {
      var out = {};
      if (zhBox.value) { out.zh = zhBox.value; }
      if (enBox.value) { out.en = enBox.value; }
      commit(function (target) { setOrDelete(target, key, Object.keys(out).length ? out : null); });
    }
    var zhBox = input(zh, write, { lang: "zh" });
    var enBox = input(en, write, { lang: "en" });
    container.appendChild(field(labelZh, zhBox));
    container.appendChild(field(labelEn, enBox));
  }

  function durationOf(value) {
    if (!value || typeof value !== "object") { return ["", "hours"]; }
    var unit = UNITS.filter(function (u) { return value[u] !== undefined; })[0] || "hours";
    return [value[unit] === undefined ? "" : value[unit], unit];
  }

  // a duration as amount + unit; empty amount removes it
  function durationControl(value, onchange, label) {
    var d = durationOf(value);
    var amount = el("input", { class: "form-control form-control-sm", type: "number", min: "0", step: "any",
      "aria-label": label + " · " + t("amount") });
    amount.value = d[0];
    var unit = selectBox(UNITS.map(function (u) { return [u, t("unit." + u)]; }), d[1], write, { "aria-label": label + " · " + t("unit") });
    function write() {
      if (amount.value === "") { onchange(null); return; }
      var out = {};
      var number = Number(amount.value);
      out[unit.value] = unit.value === "business_days" ? Math.round(number) : number;
      onchange(out);
    }
    amount.addEventListener("change", write);
    return el("div", { class: "input-group input-group-sm" }, [amount, unit]);
  }

  function durationField(container, label, value, onchange) {
    var control = durationControl(value, onchange, label);
    var id = "f" + (++fieldSeq);
    control.firstChild.id = id;
    container.appendChild(el("div", { class: "mb-2" }, [el("label", { class: "form-label small mb-0", for: id, text: label }), control]));
  }

  function stepOptions(exclude) {
    return [["", t("none")]].concat(order.filter(function (id) { return id !== exclude; }).map(function (id) {
      var step = (lf.getProperties(id) || {}).step;
      var name = localized(step && step.name);
      return [id, name && name !== id ? id + " · " + name : id];
    }));
  }

  // a "go to" selector; the step ids and names it lists are the flow's data (translate="no")
  function stepSelect(exclude, value, onchange, attrs) {
    return selectBox(stepOptions(exclude), value, onchange, Object.assign({ translate: "no" }, attrs || {}));
  }

  function targetOf(id, kind) {
    var found = outEdges(id, kind)[0];
    return found ? found.targetNodeId : "";
  }

  function nameOptions(list, keep) {
    var out = [["", t("none")]].concat(list.map(function (x) {
      var label = localized(x.name) || x.id;
      return [x.id, label === x.id ? x.id : x.id + " · " + label];
    }));
    if (keep && !out.some(function (o) { return o[0] === keep; })) { out.push([keep, keep]); }
    return out;
  }

  function heading(text) { return el("h3", { class: "h6 mt-3 mb-1 border-top pt-2", text: text }); }

  // key/value rows (params, values, fields); string values may have a zh and an en version
  function mapEditor(container, title, obj, commit, keyLabel) {
    var box = el("fieldset", { class: "mb-2" }, [el("legend", { class: "small fw-semibold mb-1", text: title })]);
    var rows = Object.keys(obj || {}).map(function (k) { return [k, obj[k]]; });
    function write() {
      var out = {};
      rows.forEach(function (r) { if (r[0]) { out[r[0]] = r[1]; } });
      commit(out);
    }
    function row(r) {
      var value = r[1];
      var wrapper = el("div", { class: "border rounded p-1 mb-1" });
      wrapper.appendChild(field(keyLabel, input(r[0], function (v) { r[0] = v.trim(); write(); })));
      var isText = typeof value === "string" || value === undefined || value === null ||
        (typeof value === "object" && !Array.isArray(value) && Object.keys(value).every(function (k) { return k === "zh" || k === "en"; }));
      if (isText) {
        var zh = typeof value === "string" ? value : (value && value.zh) || "";
        var en = value && typeof value === "object" ? value.en || "" : "";
        var zhBox = el("textarea", { class: "form-control form-control-sm", rows: "2", lang: "zh" });
        var enBox = el("textarea", { class: "form-control form-control-sm", rows: "2", lang: "en" });
        zhBox.value = zh;
        enBox.value = en;
        var save = function () {
          r[1] = enBox.value ? { zh: zhBox.value, en: enBox.value } : zhBox.value;
          write();
        };
        zhBox.addEventListener("change", save);
        enBox.addEventListener("change", save);
        wrapper.appendChild(field(t("value_zh"), zhBox));
        wrapper.appendChild(field(t("value_en"), enBox));
      } else {
        var json = input(JSON.stringify(value), function (v) {
          try { r[1] = JSON.parse(v); } catch (e) { r[1] = v; }
          write();
        });
        wrapper.appendChild(field(t("value"), json));
      }
      wrapper.appendChild(el("button", { type: "button", class: "btn btn-sm btn-outline-danger", text: t("remove"),
        onclick: function () { rows.splice(rows.indexOf(r), 1); write(); renderPanel(); } }));
      return wrapper;
    }
    rows.forEach(function (r) { box.appendChild(row(r)); });
    box.appendChild(el("button", { type: "button", class: "btn btn-sm btn-outline-secondary", text: t("add_value"),
      onclick: function () { rows.push(["", ""]); box.insertBefore(row(rows[rows.length - 1]), box.lastChild); } }));
    container.appendChild(box);
  }

  /* ---------------------------------------------------------------- the step panel */

  function renderPanel() {
    var form = document.getElementById("panel");
    var headingEl = document.getElementById("panel-heading");
    form.textContent = "";
    fieldSeq = 0;
    if (selected && !lf.getNodeModelById(selected)) { selected = null; }
    // which step the panel shows, for keyboard users (and on a crowded canvas)
    form.appendChild(field(t("edit_step"), selectBox([["", t("flow")]].concat(stepOptions(null).slice(1)), selected || "",
      function (v) { select(v || null); }, { id: "step-picker", translate: "no" })));
    if (!selected) {
      selected = null;
      headingEl.textContent = t("flow");
      renderFlowSettings(form);
      return;
    }
    var id = selected;
    var props = lf.getProperties(id) || {};
    var kind = props.kind;
    var step = props.step || {};
    headingEl.textContent = t("step") + " · " + t("kind." + kind);
    form.setAttribute("data-step", id);
    function commit(change) { updateStep(id, change); }

    var idBox = input(id, function (v) {
      if (!renameStep(id, v.trim())) { idBox.value = id; idBox.classList.add("is-invalid"); } else { renderPanel(); }
    }, { name: "step_id", pattern: "^[a-z][a-z0-9_]{0,63}$" });
    form.appendChild(field(t("step_id"), idBox));
    form.appendChild(el("div", { id: "panel-problems" }));
    i18nFields(form, step, "name", t("name_zh"), t("name_en"), commit);

    var build = PANELS[kind];
    if (build) { build(form, id, step, commit); }
    if (!(kind in NO_NEXT)) {
      form.appendChild(field(t("next"), stepSelect(id, targetOf(id, "next"), function (v) {
        setTarget(id, "next", v);
        canvasChanged();
      }, { name: "next" })));
    }
    form.appendChild(el("button", { type: "button", class: "btn btn-sm btn-outline-danger mt-2", text: t("delete_step"),
      onclick: function () {
        lf.deleteNode(id);
        order = order.filter(function (x) { return x !== id; });
        select(null);
        canvasChanged();
      } }));
    renderPanelProblems();
  }

  function renderPanelProblems() {
    var box = document.getElementById("panel-problems");
    if (!box || !selected) { return; }
    box.textContent = "";
    problems.filter(function (p) { return p.node === selected; }).forEach(function (p) {
      box.appendChild(el("div", { class: "alert alert-danger py-1 px-2 small mb-2", role: "alert", text: p.message }));
    });
  }

  var PANELS = {
    task: function (form, id, step, commit) {
      i18nFields(form, step, "title", t("title_zh"), t("title_en"), commit);
      form.appendChild(field(t("form"), selectBox(nameOptions(palette.forms, step.form), step.form, function (v) {
        commit(function (s) { setOrDelete(s, "form", v); });
      }, { name: "form" })));
      assigneeFields(form, step.assignee || {}, function (a) {
        commit(function (s) { setOrDelete(s, "assignee", Object.keys(a).length ? a : null); });
      });
      durationField(form, t("due"), step.due, function (d) { commit(function (s) { setOrDelete(s, "due", d); }); });
      listEditor(form, t("reminders"), step.reminders || [], function (list) {
        commit(function (s) { setOrDelete(s, "reminders", list.length ? list : null); });
      }, function (item, save) {
        var when = item.before ? "before" : "after";
        var box = el("div", { class: "d-flex gap-1 align-items-center" });
        var side = selectBox([["before", t("before")], ["after", t("after")]], when, function (v) {
          var d = item.before || item.after; delete item.before; delete item.after; item[v] = d; save();
        }, { "aria-label": t("reminders") });
        box.appendChild(durationControl(item[when], function (d) {
          var key = side.value; delete item.before; delete item.after; if (d) { item[key] = d; } save();
        }, t("reminders")));
        box.appendChild(side);
        return box;
      }, function () { return { before: { hours: 4 } }; });
      listEditor(form, t("escalation"), step.escalation || [], function (list) {
        commit(function (s) { setOrDelete(s, "escalation", list.length ? list : null); });
      }, function (item, save) {
        var box = el("div", { class: "d-flex gap-1 align-items-center flex-wrap" });
        box.appendChild(el("span", { class: "small", text: t("after_time") }));
        box.appendChild(durationControl(item.after, function (d) { item.after = d || { hours: 24 }; save(); }, t("escalation")));
        box.appendChild(el("span", { class: "small", text: t("to_role") }));
        box.appendChild(selectBox(nameOptions(palette.roles, item.to_role), item.to_role, function (v) { item.to_role = v; save(); },
          { "aria-label": t("to_role") }));
        return box;
      }, function () { return { after: { business_days: 1 }, to_role: (palette.roles[0] || {}).id || "team_lead" }; });
      timeoutFields(form, id, step, commit, "timeout_next");
    },
    action: function (form, id, step, commit) {
      var connectors = [["", t("none")], ["preferred", t("preferred")]].concat(palette.connectors.map(function (c) {
        return [c.name, c.name + (c.type && c.type !== c.name ? " (" + c.type + ")" : "")];
      }));
      if (step.connector && !connectors.some(function (c) { return c[0] === step.connector; })) { connectors.push([step.connector, step.connector]); }
      form.appendChild(field(t("connector"), selectBox(connectors, step.connector, function (v) {
        commit(function (s) { setOrDelete(s, "connector", v); });
      }, { name: "connector" })));
      mapEditor(form, t("params"), step.params, function (params) {
        commit(function (s) { setOrDelete(s, "params", Object.keys(params).length ? params : null); });
      }, t("param"));
      var wait = el("input", { class: "form-check-input", type: "checkbox", id: "f-wait" });
      wait.checked = !!step.wait;
      wait.addEventListener("change", function () { commit(function (s) { setOrDelete(s, "wait", wait.checked ? true : null); }); });
      form.appendChild(el("div", { class: "form-check mb-2" }, [wait, el("label", { class: "form-check-label small", for: "f-wait", text: t("wait_for_reply") })]));
    },
    decision: function (form, id) {
      form.appendChild(heading(t("cases")));
      var cases = outEdges(id, "case").sort(function (a, b) { return (a.properties.order || 0) - (b.properties.order || 0); });
      cases.forEach(function (edge, n) {
        var row = el("div", { class: "border rounded p-1 mb-1", "data-case": String(n) });
        row.appendChild(field(t("when") + " " + (n + 1), input(edge.properties.when || "", function (v) {
          lf.setProperties(edge.id, { when: v });
          lf.updateText(edge.id, v);
          canvasChanged();
        }, { name: "when", translate: "no" })));
        row.appendChild(field(t("goes_to"), stepSelect(id, edge.targetNodeId, function (v) {
          var now = lf.getProperties(edge.id) || edge.properties;
          lf.deleteEdge(edge.id);
          if (v) { connect(id, v, { kind: "case", when: now.when || "", order: now.order === undefined ? n : now.order }); }
          canvasChanged();
          renderPanel();
        }, { name: "case_next" })));
        row.appendChild(el("button", { type: "button", class: "btn btn-sm btn-outline-danger", text: t("remove"),
          onclick: function () { lf.deleteEdge(edge.id); canvasChanged(); renderPanel(); } }));
        form.appendChild(row);
      });
      // a new case needs a target: it is added pointing at the first other step, then changed here
      var firstOther = order.filter(function (x) { return x !== id; })[0];
      if (firstOther) {
        form.appendChild(el("button", { type: "button", class: "btn btn-sm btn-outline-secondary mb-2", text: t("add_case"),
          onclick: function () {
            var next = cases.reduce(function (m, e) { return Math.max(m, (e.properties.order || 0) + 1); }, 0);
            connect(id, firstOther, { kind: "case", when: "", order: next });
            canvasChanged();
            renderPanel();
          } }));
      }
      form.appendChild(field(t("otherwise"), stepSelect(id, targetOf(id, "default"), function (v) {
        setTarget(id, "default", v);
        canvasChanged();
      }, { name: "default" })));
    },
    parallel: function (form, id) {
      form.appendChild(heading(t("branches")));
      outEdges(id, "branch").forEach(function (edge) {
        form.appendChild(field(t("goes_to"), stepSelect(id, edge.targetNodeId, function (v) {
          lf.deleteEdge(edge.id);
          if (v) { connect(id, v, { kind: "branch", order: edge.properties.order }); }
          canvasChanged();
          renderPanel();
        }, { name: "branch" })));
      });
      var firstOther = order.filter(function (x) { return x !== id; })[0];
      if (firstOther) {
        form.appendChild(el("button", { type: "button", class: "btn btn-sm btn-outline-secondary mb-2", text: t("add_branch"),
          onclick: function () {
            connect(id, firstOther, { kind: "branch", order: outEdges(id, "branch").length });
            canvasChanged();
            renderPanel();
          } }));
      }
    },
    wait: function (form, id, step, commit) {
      durationField(form, t("duration"), step.duration, function (d) { commit(function (s) { setOrDelete(s, "duration", d); }); });
      form.appendChild(field(t("until"), input(step.until, function (v) { commit(function (s) { setOrDelete(s, "until", v); }); },
        { name: "until", translate: "no" })));
      form.appendChild(field(t("event"), input(step.event, function (v) { commit(function (s) { setOrDelete(s, "event", v); }); },
        { name: "event" })));
      durationField(form, t("timeout_after"), step.timeout, function (d) { commit(function (s) { setOrDelete(s, "timeout", d); }); });
      form.appendChild(field(t("timeout_step"), stepSelect(id, targetOf(id, "on_timeout"), function (v) {
        setTarget(id, "on_timeout", v);
        canvasChanged();
      }, { name: "on_timeout" })));
    },
    set: function (form, id, step, commit) {
      mapEditor(form, t("values"), step.values, function (values) {
        commit(function (s) { setOrDelete(s, "values", Object.keys(values).length ? values : null); });
      }, t("variable"));
    },
    update_customer: function (form, id, step, commit) {
      mapEditor(form, t("fields"), step.fields, function (fields) {
        commit(function (s) { setOrDelete(s, "fields", Object.keys(fields).length ? fields : null); });
      }, t("field"));
    },
    assign_owner: function (form, id, step, commit) {
      form.appendChild(field(t("role"), selectBox(nameOptions(palette.roles, step.role), step.role, function (v) {
        commit(function (s) { setOrDelete(s, "role", v); });
      }, { name: "role" })));
      form.appendChild(field(t("strategy"), selectBox([["", "–"], ["region_then_least_loaded", "region_then_least_loaded"],
        ["least_loaded", "least_loaded"], ["round_robin", "round_robin"]], step.strategy, function (v) {
        commit(function (s) { setOrDelete(s, "strategy", v); });
      }, { name: "strategy" })));
    },
    subflow: function (form, id, step, commit) {
      form.appendChild(field(t("subflow"), input(step.flow, function (v) { commit(function (s) { setOrDelete(s, "flow", v); }); },
        { name: "flow", translate: "no" })));
    },
    end: function (form, id, step, commit) {
      form.appendChild(field(t("outcome"), input(step.outcome, function (v) { commit(function (s) { setOrDelete(s, "outcome", v); }); },
        { name: "outcome", translate: "no" })));
    },
  };

  // The task's timeout: "after" is a key of the step, where it goes is an edge.
  function timeoutFields(form, id, step, commit, kind) {
    var after = step.on_timeout && step.on_timeout.after;
    durationField(form, t("timeout_after"), after, function (d) {
      commit(function (s) { setOrDelete(s, "on_timeout", d ? Object.assign({}, s.on_timeout || {}, { after: d }) : null); });
    });
    form.appendChild(field(t("timeout_step"), stepSelect(id, targetOf(id, kind), function (v) {
      setTarget(id, kind, v);
      canvasChanged();
    }, { name: "timeout_next" })));
  }

  function assigneeFields(form, assignee, save) {
    var a = copy(assignee);
    var mode = a.role !== undefined ? "role" : a.user !== undefined ? "user" : a.expr !== undefined ? "expr" : a.users ? "users" : "role";
    var box = el("fieldset", { class: "mb-2" }, [el("legend", { class: "small fw-semibold mb-1", text: t("assignee") })]);
    var modes = [["role", t("by_role")], ["user", t("by_user")], ["expr", t("by_expr")]];
    if (mode === "users") { modes.push(["users", "users"]); }
    var modeBox = selectBox(modes, mode, function (v) {
      delete a.role; delete a.user; delete a.expr; delete a.users;
      mode = v;
      drawValue();
    }, { "aria-label": t("assignee"), name: "assignee_mode" });
    var holder = el("div", { class: "mt-1" });
    function write(v) {
      delete a.role; delete a.user; delete a.expr; delete a.users;
      if (v) { a[mode] = mode === "users" ? v.split(/[\s,]+/).filter(Boolean) : v; }
      save(a);
    }
    function drawValue() {
      holder.textContent = "";
      var current = a[mode];
      if (mode === "role") {
        holder.appendChild(field(t("by_role"), selectBox(nameOptions(palette.roles, current), current, write, { name: "assignee_role" })));
      } else {
        holder.appendChild(field(modes.filter(function (m) { return m[0] === mode; })[0][1],
          input(Array.isArray(current) ? current.join(", ") : current, write, { name: "assignee_" + mode, translate: "no" })));
      }
    }
    box.appendChild(modeBox);
    box.appendChild(holder);
    drawValue();
    box.appendChild(field(t("strategy"), selectBox([["", "–"], ["claim", "claim"], ["round_robin", "round_robin"],
      ["least_loaded", "least_loaded"]], a.strategy, function (v) { setOrDelete(a, "strategy", v); save(a); }, { name: "strategy" })));
    form.appendChild(box);
  }

  // a list of objects with add/remove, each item drawn by draw(item, save)
  function listEditor(form, title, list, commit, draw, fresh) {
    var items = copy(list);
    var box = el("fieldset", { class: "mb-2" }, [el("legend", { class: "small fw-semibold mb-1", text: title })]);
    function save() { commit(items); }
    items.forEach(function (item) {
      var row = el("div", { class: "d-flex gap-1 align-items-center mb-1" }, [draw(item, save)]);
      row.appendChild(el("button", { type: "button", class: "btn btn-sm btn-outline-danger", text: t("remove"),
        onclick: function () { items.splice(items.indexOf(item), 1); save(); renderPanel(); } }));
      box.appendChild(row);
    });
    box.appendChild(el("button", { type: "button", class: "btn btn-sm btn-outline-secondary", text: t("add") + " · " + title,
      onclick: function () { items.push(fresh()); save(); renderPanel(); } }));
    form.appendChild(box);
  }

  /* ---------------------------------------------------------------- flow settings */

  function flowChanged() {
    document.getElementById("designer-title").textContent = flow.id || "";
    canvasChanged();
  }

  function renderFlowSettings(form) {
    form.removeAttribute("data-step");
    form.appendChild(el("p", { class: "form-text", text: t("no_selection") }));
    form.appendChild(field(t("flow_id"), input(flow.id, function (v) { setOrDelete(flow, "id", v.trim()); flowChanged(); },
      { name: "flow_id", translate: "no", pattern: "^[a-z][a-z0-9_]{0,63}$" })));
    i18nFields(form, flow, "name", t("name_zh"), t("name_en"), function (change) { change(flow); flowChanged(); });
    form.appendChild(field(t("timezone"), input(flow.timezone, function (v) { setOrDelete(flow, "timezone", v.trim()); flowChanged(); },
      { name: "timezone", translate: "no" })));
    listEditor(form, t("triggers"), flow.triggers || [], function (list) {
      setOrDelete(flow, "triggers", list.length ? list : null);
      flowChanged();
    }, triggerEditor, function () { return { type: "manual" }; });
    var e = flow.enrollment || {};
    function enrol(key, v) {
      var next = Object.assign({}, flow.enrollment || {});
      setOrDelete(next, key, v);
      setOrDelete(flow, "enrollment", Object.keys(next).length ? next : null);
      flowChanged();
    }
    var box = el("fieldset", { class: "mb-2" }, [el("legend", { class: "small fw-semibold mb-1", text: t("enrollment") })]);
    box.appendChild(field(t("concurrent"), selectBox([["", "–"], ["one_per_customer", "one_per_customer"], ["unlimited", "unlimited"]],
      e.concurrent, function (v) { enrol("concurrent", v); }, { name: "concurrent" })));
    box.appendChild(field(t("reenroll"), selectBox([["", "–"], ["always", "always"], ["never", "never"], ["after", "after"]],
      e.reenroll, function (v) { enrol("reenroll", v); }, { name: "reenroll" })));
    durationField(box, t("reenroll_after"), e.reenroll_after, function (d) { enrol("reenroll_after", d); });
    form.appendChild(box);
  }

  function triggerEditor(trigger, save) {
    var box = el("div", { class: "border rounded p-1 flex-grow-1", "data-trigger": trigger.type });
    function set(key, v) { setOrDelete(trigger, key, v); save(); }
    box.appendChild(field(t("trigger_type"), selectBox(TRIGGERS.map(function (k) { return [k, t("trigger." + k)]; }), trigger.type, function (v) {
      Object.keys(trigger).forEach(function (k) { delete trigger[k]; });
      trigger.type = v;
      if (v === "date") { trigger.field = "birthday"; }
      save();
      renderPanel();
    }, { name: "trigger_type" })));
    var text = function (key, label) {
      box.appendChild(field(label, input(trigger[key], function (v) { set(key, v); }, { name: "trigger_" + key, translate: "no" })));
    };
    var choice = function (key, label, values) {
      box.appendChild(field(label, selectBox([["", "–"]].concat(values.map(function (v) { return [v, v]; })), trigger[key],
        function (v) { set(key, v); }, { name: "trigger_" + key })));
    };
    if (trigger.type === "date") {
      choice("field", t("date_field"), ["birthday"]);
      text("at", t("at"));
      choice("lunar", t("lunar"), ["from_customer", "never"]);
      choice("feb29", t("feb29"), ["feb28", "mar1"]);
      box.appendChild(field(t("offset_days"), input(trigger.offset_days, function (v) { set("offset_days", v === "" ? null : Number(v)); },
        { type: "number", min: "-30", max: "30", name: "trigger_offset_days" })));
      text("customers", t("customers"));
    } else if (trigger.type === "schedule") {
      text("cron", t("cron"));
      text("customers", t("customers"));
    } else if (trigger.type === "form") {
      box.appendChild(field(t("form"), selectBox(nameOptions(palette.forms, trigger.form), trigger.form, function (v) { set("form", v); },
        { name: "trigger_form" })));
      choice("customer_from", t("customer_from"), ["submitter", "match", "create"]);
    } else if (trigger.type === "customer_event") {
      choice("event", t("event_kind"), ["created", "updated", "field_changed"]);
      text("field", t("field"));
      text("when", t("when"));
    } else if (trigger.type === "segment") {
      text("segment", t("segment"));
      choice("event", t("event_kind"), ["enter", "leave"]);
    }
    return box;
  }

  /* ---------------------------------------------------------------- publish and dry run */

  function publish() {
    var dialog = document.getElementById("publish-dialog");
    var summary = document.getElementById("publish-summary");
    var list = document.getElementById("publish-changes");
    settled().then(function () {
      if (problems.length) {
        status(t("fix_first"));
        return null;
      }
      return request(URLS.changes, { source: source });
    }).then(function (answer) {
      if (!answer) { return; }
      summary.textContent = "";
      list.textContent = "";
      if (answer.status !== 200) {
        showProblems((answer.data && answer.data.problems) || []);
        status(t("fix_first"));
        return;
      }
      var c = answer.data;
      var lines = [];
      if (c.running_version === null || c.running_version === undefined) { lines.push(t("new_flow")); } else {
        lines.push(t("running", { version: c.running_version, count: c.running_instances }));
      }
      if (c.unchanged) { lines.push(t("unchanged")); } else if (!(c.changes || []).length) { lines.push(t("no_changes")); }
      lines.forEach(function (line) { summary.appendChild(el("p", { class: "mb-1", text: line })); });
      if ((c.changes || []).length) { summary.appendChild(el("h3", { class: "h6 mt-2", text: t("changes_title") })); }
      (c.changes || []).forEach(function (change) {
        list.appendChild(el("li", { "data-change": change.change, text: t("change." + change.change) + " · " + change.summary }));
      });
      dialog.showModal();
    });
  }

  function confirmPublish() {
    var dialog = document.getElementById("publish-dialog");
    request(URLS.publish, { source: source }).then(function (answer) {
      dialog.close();
      if (answer.status === 200) {
        var d = answer.data;
        status(d.changed === false ? t("not_changed", { version: d.version }) : t("published", { flow: d.flow, version: d.version }));
        root.setAttribute("data-published", d.flow + ":" + d.version);
      } else {
        showProblems((answer.data && answer.data.problems) || []);
        status(answer.data && answer.data.problems ? t("fix_first") : t("request_failed", { status: answer.status }));
      }
    });
  }

  function listSection(title, items, line) {
    var box = el("div", { class: "mb-2" }, [el("h3", { class: "h6", text: title })]);
    if (!items || !items.length) {
      box.appendChild(el("p", { class: "small text-body-secondary", text: t("dry_none") }));
      return box;
    }
    var ol = el("ol", { class: "small" });
    items.forEach(function (item) { ol.appendChild(el("li", { text: line(item) })); });
    box.appendChild(ol);
    return box;
  }

  function dryRun() {
    var customer = document.getElementById("dry-run-customer").value;
    var out = document.getElementById("dry-run-result");
    if (!customer) { out.textContent = t("choose_customer"); return; }
    var body = { source: source, customer_id: Number(customer) };
    var start = document.getElementById("dry-run-start").value;
    if (start) { body.start = new Date(start).toISOString(); }  // the browser's local time, with its zone
    settled().then(function () {
      body.source = source;
      return request(URLS.dry_run, body);
    }).then(function (answer) {
      out.textContent = "";
      var d = answer.data || {};
      if (answer.status !== 200) {
        showProblems(d.problems || []);
        out.textContent = d.problems ? t("fix_first") : t("request_failed", { status: answer.status });
        return;
      }
      out.appendChild(el("p", { id: "dry-run-summary", "data-status": d.status, "data-outcome": d.outcome || "",
        text: t("dry_status") + ": " + t("status." + d.status) + (d.outcome ? " · " + t("dry_outcome") + ": " + d.outcome : "") }));
      out.appendChild(listSection(t("dry_path"), d.path, function (p) {
        return p.step + " (" + t("kind." + p.kind) + ")" + (p.note ? " · " + p.note : "");
      }));
      out.appendChild(listSection(t("dry_messages"), d.messages, function (m) {
        return m.step + " → " + (m.to || "") + " [" + (m.connector || m.channel || "") + "] " + (m.subject ? m.subject + ": " : "") +
          (m.text || "") + (m.skipped ? " · " + t("skipped") + ": " + m.skipped : "");
      }));
      out.appendChild(listSection(t("dry_tasks"), d.tasks, function (task) {
        return task.step + " · " + (task.title || task.form || "") + (task.assignee ? " → " + task.assignee : "");
      }));
      if (d.problems && d.problems.length) { showProblems(d.problems); }
    });
  }

  /* ---------------------------------------------------------------- start */

  // LogicFlow's Control has hard-coded Chinese labels: ours replace them, and its items become
  // keyboard-reachable buttons.
  function controlItems() {
    var control = lf.extension.control;
    ["zoom-out", "zoom-in", "reset", "undo", "redo"].forEach(function (key) { control.removeItem(key); });
    [["zoom-out", "lf-control-zoomOut", "zoom_out", function () { lf.zoom(false); }],
      ["zoom-in", "lf-control-zoomIn", "zoom_in", function () { lf.zoom(true); }],
      ["fit", "lf-control-fit", "fit", fit],
      ["undo", "lf-control-undo", "undo", function () { lf.undo(); }],
      ["redo", "lf-control-redo", "redo", function () { lf.redo(); }]].forEach(function (item) {
      control.addItem({ key: item[0], iconClass: item[1], title: t(item[2]), text: t(item[2]), onClick: item[3] });
    });
  }

  function accessible() {
    var canvas = document.getElementById("canvas");
    Array.prototype.forEach.call(canvas.querySelectorAll(".lf-control-item"), function (item) {
      if (item.hasAttribute("tabindex")) { return; }
      item.setAttribute("role", "button");
      item.setAttribute("tabindex", "0");
      item.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); item.click(); }
      });
    });
    Array.prototype.forEach.call(canvas.querySelectorAll(".lf-dnd-item"), function (item) {
      if (item.hasAttribute("tabindex")) { return; }
      var kind = item.getAttribute("data-kind") || (item.className.match(/cf-kind-(\w+)/) || [])[1];
      item.setAttribute("role", "button");
      item.setAttribute("tabindex", "0");
      item.setAttribute("data-kind", kind);
      item.setAttribute("aria-label", t("add") + " · " + t("kind." + kind));
      item.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); addStep(kind); }
      });
    });
  }

  // LogicFlow's own shapes, except that a style set on the model (a problem mark) wins over the theme.
  function markable() {
    [["rect", "RectNode", "RectNodeModel", "getNodeStyle"], ["diamond", "DiamondNode", "DiamondNodeModel", "getNodeStyle"],
      ["circle", "CircleNode", "CircleNodeModel", "getNodeStyle"], ["ellipse", "EllipseNode", "EllipseNodeModel", "getNodeStyle"],
      ["polyline", "PolylineEdge", "PolylineEdgeModel", "getEdgeStyle"]].forEach(function (shape) {
      var Base = Core[shape[2]];
      var Marked = class extends Base {};
      Marked.prototype[shape[3]] = function () { return Object.assign(Base.prototype[shape[3]].call(this), this.style); };
      lf.register({ type: shape[0], view: Core[shape[1]], model: Marked });
    });
  }

  function setPalette() {
    var kinds = palette.steps.length ? palette.steps.map(function (s) { return s.kind; }) : KINDS;
    lf.extension.dndPanel.setPatternItems(kinds.map(function (kind) {
      var step = palette.steps.filter(function (s) { return s.kind === kind; })[0] || {};
      var shape = step.shape || SHAPES[kind] || "rect";
      SHAPES[kind] = shape;
      var label = S["kind." + kind] ? t("kind." + kind) : localized(step.label) || kind;
      return { type: shape, label: label, text: label, className: "cf-kind-" + kind + " cf-shape-" + shape,
        properties: { kind: kind, step: {} } };
    }));
    accessible();
  }

  function start(graph, problemList) {
    showGraph(graph);
    fit();
    document.getElementById("yaml").value = source;
    showProblems(problemList || []);
    if (!source) { sendGraph(); }
    root.setAttribute("data-ready", "1");
  }

  function init() {
    root = document.getElementById("designer");
    if (!root || !window.Core || !window.Extension) { return; }
    S = JSON.parse(root.getAttribute("data-strings"));
    URLS = JSON.parse(root.getAttribute("data-urls"));
    LANG = root.getAttribute("data-lang") || "zh";
    var canvas = document.getElementById("canvas");
    lf = new Core.LogicFlow({
      container: canvas,
      grid: { size: 10, visible: true, type: "dot" },
      keyboard: { enabled: true },
      nodeTextEdit: false,
      edgeTextEdit: false,
      textEdit: false,
      stopScrollGraph: true,
      plugins: [Extension.DndPanel, Extension.Control],
    });
    controlItems();
    markable();
    lf.setDefaultEdgeType("polyline");
    lf.on("node:click", function (e) { select(e.data.id); });
    lf.on("edge:click", function (e) { select(e.data.sourceNodeId); });
    lf.on("blank:click", function () { select(null); });
    lf.on("dnd:panel-click", function (e) { addStep(e.data.properties.kind); });
    lf.on("node:dnd-add", function (e) {
      // a dropped node gets a readable id (its kind), like a clicked one
      var kind = e.data.properties.kind;
      var id = uniqueId(kind);
      lf.changeNodeId(e.data.id, id);
      lf.updateText(id, id);
      order.push(id);
      select(id);
      canvasChanged();
    });
    lf.on("edge:add", function (e) {
      // an edge drawn by hand: a case of a decision, a branch of a parallel, otherwise "next"
      // (edges added by the panel already carry their kind)
      var edge = e.data;
      if ((edge.properties || {}).kind) { return; }
      var from = lf.getProperties(edge.sourceNodeId) || {};
      var kind = from.kind === "decision" ? "case" : from.kind === "parallel" ? "branch" : "next";
      if (kind === "next") {
        outEdges(edge.sourceNodeId, "next").forEach(function (old) { if (old.id !== edge.id) { lf.deleteEdge(old.id); } });
      }
      var n = outEdges(edge.sourceNodeId, kind).length - 1;
      lf.setProperties(edge.id, kind === "next" ? { kind: kind } : kind === "case" ? { kind: kind, when: "", order: n } : { kind: kind, order: n });
      select(edge.sourceNodeId);
      canvasChanged();
    });
    ["node:drop", "node:delete", "edge:delete", "history:change"].forEach(function (name) {
      lf.on(name, function () { canvasChanged(); });
    });
    lf.on("node:delete", function (e) {
      order = order.filter(function (x) { return x !== e.data.id; });
      if (selected === e.data.id) { select(null); }
    });
    document.getElementById("yaml").addEventListener("input", yamlChanged);
    document.getElementById("auto-layout").addEventListener("click", autoLayout);
    document.getElementById("show-flow-settings").addEventListener("click", function () { select(null); lf.clearSelectElements(); });
    document.getElementById("toggle-dry-run").addEventListener("click", function () {
      var section = document.getElementById("dry-run");
      section.hidden = !section.hidden;
      this.setAttribute("aria-expanded", section.hidden ? "false" : "true");
    });
    document.getElementById("dry-run-go").addEventListener("click", dryRun);
    var publishButton = document.getElementById("publish");
    if (publishButton) { publishButton.addEventListener("click", publish); }
    document.getElementById("publish-cancel").addEventListener("click", function () { document.getElementById("publish-dialog").close(); });
    document.getElementById("publish-confirm").addEventListener("click", confirmPublish);

    // for tests and for people poking at the page from the console
    window.careflowDesigner = { lf: function () { return lf; }, graph: currentGraph, source: function () { return source; },
      problems: function () { return problems; }, settled: settled, select: select, addStep: addStep };

    request(URLS.palette).then(function (answer) {
      if (answer.status === 200) { palette = Object.assign(palette, answer.data); }
      lf.render({ nodes: [], edges: [] });
      setPalette();
      if (!URLS.source) {
        flow = { id: "new_flow", name: { zh: "新流程", en: "New flow" }, timezone: "Asia/Shanghai", triggers: [{ type: "manual" }] };
        source = "";
        start({ flow: flow, nodes: [], edges: [] }, []);
        return null;
      }
      return request(URLS.source).then(function (src) {
        if (src.status !== 200) { status(t("request_failed", { status: src.status })); return null; }
        source = readable = src.data.source;
        return request(URLS.graph, { source: source });
      }).then(function (answer2) {
        if (!answer2) { return; }
        if (answer2.status === 200) { start(answer2.data.graph, answer2.data.problems); } else {
          // a deployed text the designer cannot draw: it can still be fixed in the YAML
          document.getElementById("yaml").value = source;
          yamlBroken = true;
          readable = "";
          document.getElementById("yaml-error").textContent = t("yaml_invalid");
          showProblems((answer2.data && answer2.data.problems) || []);
          root.setAttribute("data-ready", "1");
        }
      });
    }).then(function () { accessible(); });
  }

  document.addEventListener("DOMContentLoaded", init);
})();
