// The API docs page (/docs): lists the endpoints of /openapi.json with plain DOM code, so the page
// works offline and asks nothing of any other host (FastAPI's Swagger UI loads its code from a CDN).
"use strict";

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

// A short type for a JSON schema, following $ref, enum, arrays and anyOf (optional values).
function typeOf(schema, spec) {
  if (!schema) return "";
  if (schema.$ref) {
    const name = schema.$ref.split("/").pop();
    const target = (spec.components && spec.components.schemas || {})[name];
    return target && target.enum ? target.enum.join(" | ") : name;
  }
  if (schema.enum) return schema.enum.join(" | ");
  if (schema.anyOf) return schema.anyOf.map((s) => typeOf(s, spec)).join(" | ");
  if (schema.type === "array") return typeOf(schema.items, spec) + "[]";
  let text = schema.type || "";
  const bounds = [];
  if (schema.minimum !== undefined) bounds.push(">= " + schema.minimum);
  if (schema.maximum !== undefined) bounds.push("<= " + schema.maximum);
  if (bounds.length) text += " (" + bounds.join(", ") + ")";
  return text;
}

function table(headers, rows) {
  const t = el("table");
  const head = el("tr");
  headers.forEach((h) => head.appendChild(el("th", h)));
  t.appendChild(head);
  rows.forEach((cells) => {
    const row = el("tr");
    cells.forEach((c) => row.appendChild(el("td", c)));
    t.appendChild(row);
  });
  return t;
}

function endpoint(path, method, op, spec) {
  const section = el("section", null, "endpoint");
  section.id = method + "-" + path.replace(/[^a-z0-9]+/gi, "-");
  const title = el("h2");
  title.appendChild(el("span", method.toUpperCase(), "method"));
  title.appendChild(el("code", path));
  if (op.summary) title.appendChild(document.createTextNode(" — " + op.summary));
  section.appendChild(title);
  if (op.description) section.appendChild(el("p", op.description));
  const params = op.parameters || [];
  if (params.length) {
    section.appendChild(el("h3", "Parameters"));
    section.appendChild(table(["name", "in", "type", "default", "description"], params.map((p) => [
      p.name + (p.required ? " (required)" : ""), p.in, typeOf(p.schema, spec),
      p.schema && p.schema.default !== undefined ? JSON.stringify(p.schema.default) : "", p.description || "",
    ])));
  }
  if (op.requestBody) {
    section.appendChild(el("h3", "Request body"));
    section.appendChild(el("p", Object.keys(op.requestBody.content || {}).join(", ")));
  }
  const responses = Object.entries(op.responses || {});
  if (responses.length) {
    section.appendChild(el("h3", "Responses"));
    section.appendChild(table(["status", "description", "content"], responses.map(([code, r]) => [
      code, r.description || "", Object.keys(r.content || {}).join(", "),
    ])));
  }
  return section;
}

async function main() {
  const status = document.getElementById("status");
  try {
    const token = sessionStorage.getItem("derain-token");  // set by the main page when the server asks for one
    const response = await fetch("/openapi.json", token ? { headers: { Authorization: `Bearer ${token}` } } : {});
    if (!response.ok) throw new Error(response.status + " " + response.statusText);
    const spec = await response.json();
    const info = spec.info || {};
    document.getElementById("title").textContent = (info.title || "API") + " " + (info.version || "");
    if (info.summary) document.getElementById("summary").prepend(document.createTextNode(info.summary + " "));
    const list = document.getElementById("endpoints");
    let count = 0;
    for (const [path, methods] of Object.entries(spec.paths || {})) {
      for (const [method, op] of Object.entries(methods)) {
        list.appendChild(endpoint(path, method, op, spec));
        count += 1;
      }
    }
    status.textContent = count + " endpoints";
    document.body.dataset.state = "done";
  } catch (err) {
    status.textContent = "Cannot read /openapi.json: " + err.message;
    status.className = "error";
    document.body.dataset.state = "error";
  }
}

main();
