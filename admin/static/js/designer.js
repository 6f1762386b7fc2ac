// The flow designer: a LogicFlow canvas (palette, controls), a side panel for the selected step
// and the flow's own settings, and the YAML beside them. The server owns the conversion: every
// canvas edit is posted as graph JSON and comes back as YAML (POST api/yaml), every YAML edit is
// posted as text and comes back as a graph (POST api/graph), both with located problems, which
// are shown on their node or edge and in a list. Transitions live only on edges, so the panel's
// "next step" selectors create and delete edges. The side panel lives in designer_panel.js.
// No inline script and no inline style: the page's CSP allows neither (see admin/designer_page.py).
(function () {
  "use strict";

  // LogicFlow shapes by step type until the palette says otherwise (rect for the rest)
  var SHAPES = { decision: "diamond", parallel: "diamond", wait: "ellipse", end: "circle" };
  var KINDS = ["task", "action", "decision", "parallel", "join", "wait", "set", "update_customer",
    "assign_owner", "subflow", "end"];
  // step types without a "next": their ways out are cases, branches, or none
  var NO_NEXT = { decision: true, parallel: true, end: true };
  var ERROR_STYLE = { stroke: "#dc3545", strokeWidth: 3 };

  var root, S, URLS, LANG, lf, panel;
  var palette = { steps: [], triggers: [], forms: [], connectors: [], roles: [] };
  var flow = {};            // the flow's own settings (graph.flow)
  var source = "";          // the YAML the page shows and sends back (keeps comments)
  var published = null;    // the YAML as opened or last published: leaving with other text asks first
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

  // LogicFlow throws on a graph it cannot draw and then keeps parts of the old one: the canvas
  // gets back what it showed before, whole, so it never sends a mix as the user's edit.
  function render(canvas) {
    var before = lf.getGraphRawData();
    try {
      lf.render(canvas);
      return true;
    } catch (e) {
      try { lf.render(before); } catch (ignored) { lf.clearData(); }
      return false;
    }
  }

  // Draws a graph that came from the server without echoing it back as a canvas edit; false
  // when the canvas cannot draw it (the canvas then shows the last graph it could).
  function showGraph(graph) {
    if (!render(toCanvas(graph))) { return false; }
    flow = graph.flow || {};
    order = graph.nodes.map(function (n) { return n.id; });
    accessible();
    marked = [];
    lastSent = signature(currentGraph());
    if (selected && !lf.getNodeModelById(selected)) { selected = null; }
    document.getElementById("designer-title").textContent = flow.id || "";
    renderPanel();
    return true;
  }

  // A request that failed (network, a script error in its answer) must not stay rejected in
  // `inflight`: Publish and Dry run wait for it.
  function failed(mine) {
    return function () {
      if (mine === seq) { root.removeAttribute("data-busy"); }
      status(t("request_failed", { status: 0 }));
    };
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
    }).catch(failed(mine));
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
      if (answer.status === 200 && !showGraph(answer.data.graph)) {
        // the canvas cannot draw it: treated as unreadable text, so a canvas edit does not
        // write the canvas' older graph over it
        yamlBroken = true;
        document.getElementById("yaml-error").textContent = t("yaml_invalid");
        showProblems(answer.data.problems || []);
      } else if (answer.status === 200) {
        readable = text;
        document.getElementById("yaml-error").textContent = "";
        showProblems(answer.data.problems || []);
      } else if (answer.data && answer.data.problems) {
        document.getElementById("yaml-error").textContent = t("yaml_invalid");
        showProblems(answer.data.problems);
      } else {
        status(t("request_failed", { status: answer.status }));
      }
    }).catch(failed(mine));
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
    if (!render(toCanvas(graph))) { status(t("request_failed", { status: 0 })); return; }
    accessible();
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

  /* ---------------------------------------------------------------- the side panel (designer_panel.js) */

  function renderPanel() { panel.render(); }

  function renderPanelProblems() { panel.renderProblems(); }

  function deleteStep(id) {
    lf.deleteNode(id);
    order = order.filter(function (x) { return x !== id; });
    select(null);
    canvasChanged();
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
        // the summary already says what happened ("added step ..."); the colour repeats it
        var colour = { added: "text-success", removed: "text-danger" }[change.change] || "";
        list.appendChild(el("li", { "data-change": change.change, class: colour, text: change.summary }));
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
        published = source;
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
    if (!showGraph(graph)) {  // as for text the server cannot read: fixed in the YAML
      yamlBroken = true;
      readable = "";
      document.getElementById("yaml-error").textContent = t("yaml_invalid");
    }
    fit();
    document.getElementById("yaml").value = source;
    showProblems(problemList || []);
    if (!source) { sendGraph(); }
    root.setAttribute("data-ready", "1");
  }

  function init() {
    root = document.getElementById("designer");
    if (!root || !window.Core || !window.Extension || !window.CareflowDesignerPanel) { return; }
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
    panel = window.CareflowDesignerPanel({
      lf: lf, palette: palette, t: t, el: el, copy: copy, localized: localized, NO_NEXT: NO_NEXT,
      flow: function () { return flow; }, order: function () { return order; },
      selected: function () { return selected; }, problems: function () { return problems; },
      select: select, updateStep: updateStep, renameStep: renameStep, setTarget: setTarget, connect: connect,
      outEdges: outEdges, canvasChanged: canvasChanged, deleteStep: deleteStep,
    });
    lf.on("node:click", function (e) { select(e.data.id); });
    lf.on("edge:click", function (e) {
      // the panel shows where the edge starts; the edge stays selected, so Backspace removes the edge
      selected = e.data.sourceNodeId;
      renderPanel();
    });
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
    window.addEventListener("beforeunload", function (e) {
      // the browser shows its own "leave site?" question; the text is not ours to choose
      if (published !== null && source !== published) { e.preventDefault(); e.returnValue = ""; }
    });
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
        source = published = "";
        start({ flow: flow, nodes: [], edges: [] }, []);
        return null;
      }
      return request(URLS.source).then(function (src) {
        if (src.status !== 200) { status(t("request_failed", { status: src.status })); return null; }
        source = readable = published = src.data.source;
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
