// Makes schemas.json, the JSON schemas deploy/kubernetes is validated
// against (TestKubernetesManifests), from the Kubernetes OpenAPI (swagger)
// document the npm package kubernetes-client ships:
//
//   npm pack kubernetes-client@9.0.0 && tar xzf kubernetes-client-9.0.0.tgz
//   node make-schemas.js package/lib/specs/swagger-1.13.json.gz > schemas.json
//
// It keeps the definitions the manifests' kinds need, as kubeconform's
// "standalone-strict" schemas do: objects refuse properties they do not
// define (kubectl's strict decoding), int-or-string and quantities take a
// string or a number.
const fs = require("fs");
const zlib = require("zlib");
const src = process.argv[2];
const swagger = JSON.parse(zlib.gunzipSync(fs.readFileSync(src)));
const roots = {
  "v1/ConfigMap": "io.k8s.api.core.v1.ConfigMap",
  "apps/v1/Deployment": "io.k8s.api.apps.v1.Deployment",
  "v1/Service": "io.k8s.api.core.v1.Service",
  "v1/Secret": "io.k8s.api.core.v1.Secret",
};
const out = {};
const visit = (name) => {
  if (out[name]) return;
  const d = JSON.parse(JSON.stringify(swagger.definitions[name]));
  if (!d) throw new Error("no definition " + name);
  out[name] = d;
  const walk = (s) => {
    if (!s || typeof s !== "object") return;
    if (s.$ref) {
      const n = s.$ref.replace("#/definitions/", "");
      visit(n);
      s.$ref = "#/definitions/" + n;
    }
    if (s.properties && s.additionalProperties === undefined) s.additionalProperties = false;
    for (const k of Object.keys(s)) if (k !== "$ref") walk(s[k]);
  };
  walk(d);
  if (name === "io.k8s.apimachinery.pkg.util.intstr.IntOrString") out[name] = { oneOf: [{ type: "string" }, { type: "integer" }] };
  if (name === "io.k8s.apimachinery.pkg.api.resource.Quantity") out[name] = { oneOf: [{ type: "string" }, { type: "number" }] };
};
Object.values(roots).forEach(visit);
const sorted = {};
Object.keys(out).sort().forEach((k) => (sorted[k] = out[k]));
process.stdout.write(JSON.stringify({
  $comment: "Made by make-schemas.js from npm kubernetes-client@9.0.0 lib/specs/swagger-1.13.json.gz (Kubernetes " + swagger.info.version + ")",
  kinds: roots, definitions: sorted }, null, 1) + "\n");
