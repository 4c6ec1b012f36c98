// validate-prometheus-crds.mjs: check Prometheus Operator objects against the operator's CRD schemas.
//
//   <render as a JSON array of objects> | .tools/bin/node scripts/validate-prometheus-crds.mjs
//
// The schemas are those of @kubernetes-models/prometheus-operator (pinned in scripts/install-tools.sh,
// installed into .tools/prometheus-operator by `make tools`): generated from the operator's
// monitoring.coreos.com API types, compiled validators for types, required fields, enums and the
// kubebuilder patterns (durations such as `for:` and `interval:`). Objects of other API groups are
// skipped (kubernetes-validate checks those); an unknown monitoring.coreos.com kind is an error.
// Prints one line per object; exits 1 if any is invalid.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const models = process.env.PROMETHEUS_OPERATOR_MODELS
  ?? join(root, ".tools", "prometheus-operator", "node_modules", "@kubernetes-models", "prometheus-operator");
const objects = JSON.parse(readFileSync(0, "utf8"));
let failed = 0;
let checked = 0;
for (const obj of objects) {
  const [group, version] = (obj.apiVersion ?? "").split("/");
  if (group !== "monitoring.coreos.com") continue;
  const name = `${obj.kind}/${obj.metadata?.name}`;
  let Model;
  try {
    Model = (await import(pathToFileURL(join(models, group, version, `${obj.kind}.js`)).href))[obj.kind];
  } catch (err) {
    console.log(`INVALID ${name}: no schema for ${obj.apiVersion} ${obj.kind} (${err.code ?? err.message})`);
    failed++;
    continue;
  }
  try {
    new Model(obj).validate();
    console.log(`valid ${obj.apiVersion} ${name}`);
  } catch (err) {
    console.log(`INVALID ${name}: ${err.message}`);
    failed++;
  }
  checked++;
}
console.log(`${checked} monitoring.coreos.com object(s) checked, ${failed} invalid`);
process.exit(failed ? 1 : 0);
