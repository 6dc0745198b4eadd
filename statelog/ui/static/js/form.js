// A form for an app's human input, built from the schema the waiting action declares
// (JSON Schema subset: an object of string/integer/number/boolean properties with
// enum, minimum/maximum, minLength/maxLength, pattern, required), validated before
// it is sent. Anything else is edited as JSON text.

import { h } from "./dom.js";

function fieldType(spec) {
  const t = Array.isArray(spec.type) ? spec.type.find((x) => x !== "null") : spec.type;
  if (Array.isArray(spec.enum)) return "enum";
  return ["string", "integer", "number", "boolean"].includes(t) ? t : "json";
}

/** Check one value against its property schema: an error message or "". */
export function checkValue(spec, raw, required) {
  const type = fieldType(spec);
  if (type === "boolean") return { value: Boolean(raw), error: "" };
  if (raw === "" || raw === undefined) {
    return required ? { value: undefined, error: "required" } : { value: undefined, error: "" };
  }
  let value = raw;
  if (type === "integer" || type === "number") {
    value = Number(raw);
    if (!Number.isFinite(value)) return { value, error: "expected a number" };
    if (type === "integer" && !Number.isInteger(value)) return { value, error: "expected a whole number" };
    if (typeof spec.minimum === "number" && value < spec.minimum) return { value, error: `must be ≥ ${spec.minimum}` };
    if (typeof spec.maximum === "number" && value > spec.maximum) return { value, error: `must be ≤ ${spec.maximum}` };
  } else if (type === "json") {
    try {
      value = JSON.parse(raw);
    } catch {
      return { value, error: "expected JSON" };
    }
  } else if (type === "enum") {
    const match = spec.enum.find((option) => String(option) === raw);
    if (match === undefined) return { value, error: "not one of the choices" };
    value = match;
  } else {
    if (typeof spec.minLength === "number" && value.length < spec.minLength) return { value, error: `at least ${spec.minLength} characters` };
    if (typeof spec.maxLength === "number" && value.length > spec.maxLength) return { value, error: `at most ${spec.maxLength} characters` };
    if (typeof spec.pattern === "string") {
      let re = null;
      try {
        re = new RegExp(spec.pattern, "u");
      } catch {
        re = null;
      }
      if (re && !re.test(value)) return { value, error: `must match ${spec.pattern}` };
    }
  }
  return { value, error: "" };
}

/**
 * inputForm(schema, onSubmit): a <form>; onSubmit(inputs) is called with the checked
 * values (an async function; its error is shown in the form).
 */
export function inputForm(schema, onSubmit, idPrefix = "input") {
  const props = (schema && typeof schema === "object" && schema.properties) || {};
  const required = new Set(Array.isArray(schema && schema.required) ? schema.required : []);
  const names = Object.keys(props);
  const fields = [];
  const status = h("p", { class: "form-status", role: "status", "aria-live": "polite" });
  const form = h("form", { class: "input-form", novalidate: true, "aria-label": "Input for the waiting action" });
  if (schema && schema.description) form.appendChild(h("p", null, String(schema.description)));
  names.forEach((name, i) => {
    const spec = props[name] || {};
    const type = fieldType(spec);
    const id = `${idPrefix}-${i}`;
    let control;
    if (type === "boolean") {
      control = h("input", { type: "checkbox", id, name });
      if (spec.default === true) control.checked = true;
    } else if (type === "enum") {
      control = h(
        "select",
        { id, name },
        required.has(name) ? null : h("option", { value: "" }, "—"),
        spec.enum.map((option) => h("option", { value: String(option) }, String(option))),
      );
    } else if (type === "json") {
      control = h("textarea", { id, name, rows: 3 });
    } else {
      control = h("input", { id, name, type: type === "string" ? "text" : "number", step: type === "integer" ? "1" : type === "number" ? "any" : null });
    }
    if (spec.default !== undefined && type !== "boolean") control.value = type === "json" ? JSON.stringify(spec.default) : String(spec.default);
    const error = h("span", { class: "field-error", id: `${id}-error`, "aria-live": "polite" });
    control.setAttribute("aria-describedby", `${id}-error`);
    fields.push({ name, spec, control, error, type });
    form.appendChild(
      h(
        "div",
        { class: "field" },
        h("label", { for: id }, spec.title ? String(spec.title) : name, required.has(name) ? " *" : ""),
        control,
        spec.description ? h("small", { class: "muted" }, String(spec.description)) : null,
        error,
      ),
    );
  });
  const submit = h("button", { type: "submit", class: "primary" }, "Send input");
  form.appendChild(h("div", { class: "form-actions" }, submit, status));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const inputs = {};
    let bad = 0;
    for (const f of fields) {
      const raw = f.type === "boolean" ? f.control.checked : f.control.value;
      const { value, error } = checkValue(f.spec, raw, required.has(f.name));
      f.error.textContent = error;
      f.control.setAttribute("aria-invalid", error ? "true" : "false");
      if (error) bad += 1;
      else if (value !== undefined) inputs[f.name] = value;
    }
    if (bad) {
      status.textContent = `${bad} field(s) need a fix`;
      return;
    }
    submit.disabled = true;
    status.textContent = "Sending…";
    try {
      await onSubmit(inputs);
      status.textContent = "Sent.";
    } catch (err) {
      status.textContent = "Not sent: " + (err && err.message ? err.message : String(err));
      submit.disabled = false;
    }
  });
  return form;
}
