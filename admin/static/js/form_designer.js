/* The form designer page (admin/templates/admin/form_designer.html).
 *
 * Alpine's CSP build runs the page (the Content-Security-Policy forbids eval), so the template only
 * names properties and methods defined here. The page holds the design (engine/forms_design.py);
 * the server turns it into JSON Schema, checks it like `careflow validate`, renders the preview
 * with the inbox's renderer and deploys it. SortableJS reorders the field list; the arrow buttons
 * do the same from the keyboard.
 */
(function () {
  "use strict";

  const CHOICES = ["select", "radio", "checkboxes"];
  const NUMERIC = ["number", "integer", "rating"];
  const TEXTS = ["text", "textarea", "phone", "email"];
  let uid = 0;

  // SortableJS drags a copy of the list item (class sortable-fallback) appended to the page; Alpine
  // would try to bind that copy's directives outside its x-for and fail. Observers are called in
  // the order they were created, and this one exists before Alpine's, so the copy is marked
  // ignored before Alpine looks at it.
  new MutationObserver(function (records) {
    records.forEach(function (record) {
      record.addedNodes.forEach(function (node) {
        if (node.classList && node.classList.contains("sortable-fallback")) node._x_ignore = true;
      });
    });
  }).observe(document.documentElement, { childList: true, subtree: true });

  function readJson(id) {
    const el = document.getElementById(id);
    return el ? JSON.parse(el.textContent) : null;
  }

  function text(value) {
    return { zh: (value && value.zh) || "", en: (value && value.en) || "" };
  }

  /* Give every field what the editor binds to: an id for x-for, labels, condition as text. */
  function prepare(design) {
    design.title = text(design.title);
    design.description = text(design.description);  // left empty, the form has none
    design.fields = (design.fields || []).map(function (f) {
      f._uid = ++uid;
      f.label = text(f.label);
      f.help = text(f.help);
      f.options = (f.options || []).map(function (o) { return { value: o.value, label: text(o.label) }; });
      if (f.show_if && typeof f.show_if.equals !== "string") {
        f.show_if = { field: f.show_if.field, equals: JSON.stringify(f.show_if.equals) };
      }
      ["min", "max", "minLength", "maxLength"].forEach(function (k) { if (f[k] === null || f[k] === undefined) f[k] = ""; });
      f.pattern = f.pattern || "";
      return f;
    });
    return design;
  }

  function newField(key) {
    return { _uid: ++uid, key: key, type: "text", label: text(null), help: text(null), required: false, options: [],
             min: "", max: "", minLength: "", maxLength: "", pattern: "", show_if: null, widget_explicit: true,
             extra: {}, locked: false, schema: null };
  }

  function formValues(form) {
    const values = {};
    new FormData(form).forEach(function (value, name) {
      if (typeof value !== "string") return;  // a chosen file: the preview needs no upload
      (values[name] = values[name] || []).push(value);
    });
    return values;
  }

  document.addEventListener("alpine:init", function () {
    window.Alpine.data("formDesigner", function () {
      return {
        design: prepare(readJson("fd-design")),
        types: readJson("fd-types") || [],
        selected: -1,
        tab: "fields",
        problems: [],
        previewHtml: "",
        rawText: "",
        savedMessage: "",
        saving: false,
        existing: false,
        timer: null,
        checking: false,
        sequence: 0,

        init() {
          const root = this.$root;
          this.existing = root.dataset.existing === "true";
          if (this.design.fields.length) this.selected = 0;
          this.$watch("design", () => { this.savedMessage = ""; this.schedule(); });
          this.refresh(null, false);
          this.$nextTick(() => this.sortable());
        },

        sortable() {
          const list = document.getElementById("fd-field-list");
          if (!list || !window.Sortable) return;
          let before = null;
          window.Sortable.create(list, {
            handle: ".fd-handle", draggable: ".fd-field", ghostClass: "fd-ghost", animation: 120,
            forceFallback: true,  // mouse and touch events rather than native drag and drop: the same on phones
            onStart: (evt) => { before = evt.item.nextSibling; },
            onEnd: (evt) => {
              // Put the node back where Alpine rendered it, then move the data: Alpine redraws the list.
              evt.from.insertBefore(evt.item, before);
              this.move(evt.oldDraggableIndex, evt.newDraggableIndex);
            },
          });
        },

        /* --- the field list --- */
        get current() { return this.design.fields[this.selected]; },
        get showEditor() { return this.selected >= 0 && !!this.current; },
        get noneSelected() { return !this.showEditor; },
        get currentEditable() { return this.showEditor && !this.current.locked; },
        fieldTitle(field) {
          const lang = document.documentElement.lang.startsWith("en") ? "en" : "zh";
          return field.label[lang] || field.label.zh || field.label.en || field.key;
        },
        fieldClass(index) { return index === this.selected ? "active" : ""; },
        isSelected(index) { return index === this.selected ? "true" : "false"; },
        isFirst(index) { return index === 0; },
        isLast(index) { return index === this.design.fields.length - 1; },
        moveLabel(direction, field) {
          const word = document.getElementById(direction === "up" ? "fd-move-up" : "fd-move-down").textContent;
          return word + ": " + this.fieldTitle(field);
        },
        select(index) { this.selected = index; },
        selectKey(key) {
          const index = this.design.fields.findIndex(function (f) { return f.key === key; });
          if (index >= 0) { this.tab = "fields"; this.selected = index; }
        },
        move(from, to) {
          if (from === to || to < 0 || to >= this.design.fields.length) return;
          const chosen = this.current;
          const fields = this.design.fields.slice();
          const item = fields.splice(from, 1)[0];
          fields.splice(to, 0, item);
          this.design.fields = fields;
          this.selected = fields.indexOf(chosen);
        },
        moveUp(index) { this.move(index, index - 1); this.focusMoved(index - 1, ".fd-up"); },
        moveDown(index) { this.move(index, index + 1); this.focusMoved(index + 1, ".fd-down"); },
        focusMoved(index, which) {
          this.$nextTick(() => {
            const items = document.querySelectorAll("#fd-field-list .fd-field");
            const button = items[index] && items[index].querySelector(which);
            if (button && !button.disabled) button.focus();
          });
        },
        addField() {
          const keys = this.design.fields.map(function (f) { return f.key; });
          let n = this.design.fields.length + 1;
          while (keys.indexOf("field_" + n) >= 0) n++;
          const field = newField("field_" + n);
          const label = this.$root.dataset.newField;
          field.label = { zh: label + " " + n, en: "" };
          this.design.fields.push(field);
          this.selected = this.design.fields.length - 1;
          this.$nextTick(() => { const key = document.getElementById("fd-label-zh"); if (key) key.focus(); });
        },
        renameKey(evt) {
          // Conditions that name this field follow its new name.
          const before = this.current.key;
          const after = evt.target.value;
          this.design.fields.forEach(function (f) {
            if (f.show_if && f.show_if.field === before) f.show_if.field = after;
          });
          this.current.key = after;
        },
        removeField() {
          this.design.fields.splice(this.selected, 1);
          this.selected = Math.min(this.selected, this.design.fields.length - 1);
        },

        /* --- the field editor --- */
        get hasOptions() { return this.currentEditable && (CHOICES.indexOf(this.current.type) >= 0 || this.current.type === "yesno"); },
        get fixedOptions() { return this.currentEditable && this.current.type === "yesno"; },
        get editableOptions() { return this.hasOptions && !this.fixedOptions; },
        get isNumeric() { return this.currentEditable && NUMERIC.indexOf(this.current.type) >= 0; },
        get isText() { return this.currentEditable && TEXTS.indexOf(this.current.type) >= 0; },
        get isConditional() { return this.currentEditable && !!this.current.show_if; },
        get hasFieldExtra() { return this.currentEditable && Object.keys(this.current.extra || {}).length > 0; },
        get currentExtraJson() { return this.current ? JSON.stringify(this.current.extra, null, 2) : ""; },
        get currentSchemaJson() { return this.current ? JSON.stringify(this.current.schema, null, 2) : ""; },
        get hasExtra() { return Object.keys(this.design.extra || {}).length > 0; },
        get extraJson() { return JSON.stringify(this.design.extra, null, 2); },
        optionId(what, index) { return "fd-option-" + what + "-" + index; },
        typeChanged() {
          // A yes/no field always has the two values true and false; other choices start empty.
          const field = this.current;
          const booleans = field.options.length === 2 && typeof field.options[0].value === "boolean";
          if (field.type === "yesno" && !booleans) {
            field.options = [{ value: true, label: text(null) }, { value: false, label: text(null) }];
          } else if (field.type !== "yesno" && booleans) {
            field.options = [];
          }
        },
        addOption() { this.current.options.push({ value: "", label: text(null) }); },
        removeOption(index) { this.current.options.splice(index, 1); },
        get otherFields() {
          const key = this.current ? this.current.key : null;
          return this.design.fields.filter(function (f) { return f.key !== key; });
        },
        toggleCondition(evt) {
          if (!evt.target.checked) { this.current.show_if = null; return; }
          const first = this.otherFields[0];
          this.current.show_if = { field: first ? first.key : "", equals: "" };
          const choices = this.conditionChoices;
          if (choices.length) this.current.show_if.equals = choices[0].value;
        },
        get conditionTarget() {
          const show = this.current && this.current.show_if;
          return show ? this.design.fields.find(function (f) { return f.key === show.field; }) : null;
        },
        get conditionChoices() {
          const target = this.conditionTarget;
          if (!target || target.locked) return [];
          if (target.type === "checkbox") return [{ value: "true", text: "✓" }, { value: "false", text: "✗" }];
          if (CHOICES.indexOf(target.type) < 0 && target.type !== "yesno") return [];
          const self = this;
          return target.options.map(function (o) {
            const value = typeof o.value === "string" ? o.value : JSON.stringify(o.value);
            const label = o.label && (o.label.zh || o.label.en) ? self.fieldTitle({ label: o.label, key: value }) : value;
            return { value: value, text: label };
          });
        },
        get conditionHasChoices() { return this.conditionChoices.length > 0; },
        get conditionIsFree() { return !this.conditionHasChoices; },

        /* --- problems --- */
        get hasProblems() { return this.problems.length > 0; },
        hasFieldProblems(key) { return this.problems.some(function (p) { return p.field && p.field === key; }); },
        get currentProblems() {
          const key = this.current ? this.current.key : null;
          return this.problems.filter(function (p) { return p.field === key; }).map(function (p) { return p.message; });
        },

        /* --- tabs --- */
        tabIs(name) { return this.tab === name; },
        tabClass(name) { return this.tab === name ? "active" : ""; },
        tabSelected(name) { return this.tab === name ? "true" : "false"; },
        showTab(name) { this.tab = name; },

        /* --- the server --- */
        payload() {
          return JSON.parse(JSON.stringify(this.design));
        },
        post(url, body) {
          return fetch(url, {
            method: "POST", credentials: "same-origin",
            headers: { "Content-Type": "application/json", "X-CSRFToken": this.$root.dataset.csrf, "Accept": "application/json" },
            body: JSON.stringify(body),
          }).then(function (response) {
            return response.json().then(function (data) { return { status: response.status, data: data }; });
          });
        },
        failed() { this.problems = [{ field: "", message: this.$root.dataset.networkError }]; },
        schedule() {
          clearTimeout(this.timer);
          this.timer = setTimeout(() => this.refresh(null, false), 250);
        },
        refresh(values, check) {
          const ticket = ++this.sequence;
          const form = document.getElementById("fd-preview");
          // Once asked to check, the preview keeps checking: its errors follow every later change.
          this.checking = this.checking || !!check;
          const body = { design: this.payload(), values: values || (form ? formValues(form) : {}), check: this.checking };
          return this.post(this.$root.dataset.previewUrl, body).then((answer) => {
            if (ticket !== this.sequence) return;  // a newer edit is on its way
            this.problems = answer.data.problems || [];
            this.previewHtml = answer.data.html || "";
            // Alpine's CSP build has no x-html; the fragment is the server's escaped Jinja output.
            const target = document.getElementById("fd-preview-fields");
            if (target && this.previewHtml) target.innerHTML = this.previewHtml;
            if (this.tab !== "json") this.rawText = answer.data.schema || "";
          }).catch(() => this.failed());
        },
        get noPreview() { return !this.previewHtml; },
        get hasPreview() { return !!this.previewHtml; },
        previewChanged() { this.refresh(null, false); },
        checkPreview() { this.refresh(null, true); },
        applyRaw() {
          this.post(this.$root.dataset.openUrl, { text: this.rawText, id: this.design.id }).then((answer) => {
            if (answer.status !== 200) { this.problems = answer.data.problems || []; return; }
            this.design = prepare(answer.data.design);
            this.selected = this.design.fields.length ? 0 : -1;
            this.tab = "fields";
          }).catch(() => this.failed());
        },
        save() {
          this.saving = true;
          this.post(this.$root.dataset.saveUrl, { design: this.payload() }).then((answer) => {
            this.saving = false;
            if (answer.status !== 200) { this.problems = answer.data.problems || []; this.savedMessage = ""; return; }
            this.problems = [];
            this.existing = true;
            this.savedMessage = answer.data.message;
            if (window.location.pathname !== answer.data.url) window.history.replaceState(null, "", answer.data.url);
          }).catch(() => { this.saving = false; this.failed(); });
        },
      };
    });
  });
})();
