// Validate custom resources against the schemas of their published CRDs.
// Reads a JSON array of manifests on stdin; prints a JSON array with one
// {kind, name, errors} entry per manifest (errors empty when valid).
import { readFileSync } from "node:fs";

const PACKAGES = {
  "monitoring.coreos.com": "@kubernetes-models/prometheus-operator",
  "gateway.networking.k8s.io": "@kubernetes-models/gateway-api",
  "cert-manager.io": "@kubernetes-models/cert-manager",
};

async function validate(doc) {
  const [group, version] = doc.apiVersion.split("/");
  const pkg = PACKAGES[group];
  if (!pkg) {
    return [`no published schema bundled for ${doc.apiVersion}`];
  }
  let model;
  try {
    model = await import(`${pkg}/${group}/${version}/${doc.kind}`);
  } catch (err) {
    return [`no schema for ${doc.apiVersion} ${doc.kind} in ${pkg}: ${err.message}`];
  }
  try {
    new model[doc.kind](doc).validate();
    return [];
  } catch (err) {
    return [err.message];
  }
}

const docs = JSON.parse(readFileSync(0, "utf8"));
const results = [];
for (const doc of docs) {
  results.push({ kind: doc.kind, name: doc.metadata?.name ?? "", errors: await validate(doc) });
}
process.stdout.write(JSON.stringify(results));
