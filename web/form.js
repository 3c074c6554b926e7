// A form generated from a JSON Schema of an object's parameters (an instrument action's params).
// Each property gets a field by its type: integer/number (with minimum/maximum), string (a select
// for enum, the pattern checked), boolean (a checkbox), a type that admits null (empty = null);
// anything else (objects, arrays, unions) a JSON text field. value() gives the parameters object
// (empty optional fields left out) or throws an Error that names the field. The daemon checks
// the parameters again; the form only saves a round trip.
import { h } from "./ui.js";

function typesOf(p) {
  const t = p.type;
  return Array.isArray(t) ? t : t ? [t] : [];
}

function field(name, p, required, id) {
  const types = typesOf(p);
  const nullable = types.includes("null");
  const main = types.filter((t) => t !== "null");
  const kind = main.length === 1 ? main[0] : "json";
  const hint = [];
  if (p.minimum != null) hint.push("min " + p.minimum);
  if (p.maximum != null) hint.push("max " + p.maximum);
  if (nullable) hint.push("empty: null");
  let input;
  if (Array.isArray(p.enum)) {
    input = h("select", { id, name }, required ? null : h("option", { value: "" }, "—"),
      p.enum.map((v) => h("option", { value: JSON.stringify(v) }, String(v))));
    if (p.default !== undefined) input.value = JSON.stringify(p.default);
    return { kind: "enum", input, label: labelFor(name, required, hint, input, p) };
  }
  if (kind === "boolean") {
    input = h("input", { id, name, type: "checkbox" });
    input.checked = p.default === true;
    return { kind, input, label: h("label", { class: "checkbox", title: p.description || "" },
      input, name) };
  }
  if (kind === "integer" || kind === "number") {
    input = h("input", { id, name, type: "number", inputmode: "decimal",
      step: kind === "integer" ? "1" : "any", min: p.minimum, max: p.maximum });
  } else if (kind === "string") {
    input = h("input", { id, name, type: "text", autocomplete: "off" });
  } else {
    input = h("textarea", { id, name, rows: "2", placeholder: "JSON" });
  }
  if (p.default !== undefined)
    input.value = kind === "json" ? JSON.stringify(p.default) : String(p.default);
  return { kind, nullable, input, label: labelFor(name, required, hint, input, p) };
}

function labelFor(name, required, hint, input, p) {
  return h("label", { title: [p.description, p.pattern && "pattern " + p.pattern].filter(Boolean).join("; ") },
    h("span", {}, name, required ? " *" : "", hint.length ? h("small", { class: "dim" }, " (" + hint.join(", ") + ")") : null),
    input);
}

export function schemaForm(schema, opts = {}) {
  const props = (schema && schema.properties) || {};
  const required = new Set((schema && schema.required) || []);
  const fields = Object.entries(props).map(([name, p]) =>
    Object.assign({ name, required: required.has(name), p },
      field(name, p, required.has(name), `${opts.idPrefix || "f"}-${name}`)));
  const el = h("div", { class: "schema-form" }, fields.map((f) => f.label));

  function value() {
    const out = {};
    for (const f of fields) {
      const raw = f.kind === "boolean" ? f.input.checked : f.input.value.trim();
      if (f.kind === "boolean") {
        if (raw || f.required) out[f.name] = raw;
        continue;
      }
      if (raw === "") {
        if (f.nullable && f.required) out[f.name] = null;
        else if (f.required) throw new Error(`${f.name} is required`);
        continue;
      }
      let v;
      if (f.kind === "enum" || f.kind === "json") {
        try { v = JSON.parse(raw); } catch (e) { throw new Error(`${f.name}: not valid JSON`); }
      } else if (f.kind === "integer" || f.kind === "number") {
        v = Number(raw);
        if (!isFinite(v)) throw new Error(`${f.name}: not a number`);
        if (f.kind === "integer" && !Number.isInteger(v)) throw new Error(`${f.name}: not a whole number`);
        if (f.p.minimum != null && v < f.p.minimum) throw new Error(`${f.name}: below ${f.p.minimum}`);
        if (f.p.maximum != null && v > f.p.maximum) throw new Error(`${f.name}: above ${f.p.maximum}`);
      } else {
        v = raw;
        if (f.p.pattern && !new RegExp(f.p.pattern).test(v))
          throw new Error(`${f.name}: does not match ${f.p.pattern}`);
      }
      out[f.name] = v;
    }
    return out;
  }
  return { el, value, fields };
}
