// The flow designer's side panel: the fields of the selected step's type, or the flow's own
// settings (id, names, time zone, triggers, enrollment). designer.js owns the canvas and the
// state and hands them over in `d`; every edit made here ends in d.canvasChanged(), which sends
// the graph to the server and shows the YAML it answers. Ways out of a step ("next step", the
// cases of a decision, branches, timeouts) are edges: their selectors create and delete edges.
window.CareflowDesignerPanel = function (d) {
  "use strict";

  var UNITS = ["minutes", "hours", "days", "weeks", "business_days", "business_hours"];
  var TRIGGERS = ["manual", "form", "schedule", "date", "customer_event", "segment"];
  var lf = d.lf, palette = d.palette, t = d.t, el = d.el, copy = d.copy, localized = d.localized;
  var select = d.select, updateStep = d.updateStep, renameStep = d.renameStep, setTarget = d.setTarget;
  var connect = d.connect, outEdges = d.outEdges, canvasChanged = d.canvasChanged, NO_NEXT = d.NO_NEXT;

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
    return [["", t("none")]].concat(d.order().filter(function (id) { return id !== exclude; }).map(function (id) {
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
    var selected = d.selected();
    if (selected && !lf.getNodeModelById(selected)) { selected = null; }
    // which step the panel shows, for keyboard users (and on a crowded canvas)
    form.appendChild(field(t("edit_step"), selectBox([["", t("flow")]].concat(stepOptions(null).slice(1)), selected || "",
      function (v) { select(v || null); }, { id: "step-picker", translate: "no" })));
    if (!selected) {
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
        d.deleteStep(id);
      } }));
    renderPanelProblems();
  }

  function renderPanelProblems() {
    var box = document.getElementById("panel-problems");
    var selected = d.selected();
    if (!box || !selected) { return; }
    box.textContent = "";
    d.problems().filter(function (p) { return p.node === selected; }).forEach(function (p) {
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
      var firstOther = d.order().filter(function (x) { return x !== id; })[0];
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
      var firstOther = d.order().filter(function (x) { return x !== id; })[0];
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
    var flow = d.flow();
    document.getElementById("designer-title").textContent = flow.id || "";
    canvasChanged();
  }

  function renderFlowSettings(form) {
    var flow = d.flow();
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

  return { render: renderPanel, renderProblems: renderPanelProblems };
};
