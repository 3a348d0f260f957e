#!/usr/bin/env bash
# Builds helm from the Go module proxy (the version go.mod pins) into a per-machine
# cache keyed by version, so it is built once: a second run only prints the path.
# Usage: build.sh [OUT_DIR]   (default: $VK_FARGATE_CACHE/helm/<helm version>)
# Prints the helm binary's path on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
helm_version=$(awk '$1=="helm.sh/helm/v3" {print $2; exit}' "$here/go.mod")
cache=${VK_FARGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vk-fargate}
out=${1:-$cache/helm/$helm_version}
bin=$out/helm

if [ -x "$bin" ]; then
  echo "cached: $bin" >&2
  echo "$bin"
  exit 0
fi
if ! command -v go >/dev/null; then
  echo "build.sh: Go is needed to build helm $helm_version (or put a helm binary at $bin)" >&2
  exit 1
fi
mkdir -p "$out"

# As helm's Makefile: the version, and the Kubernetes version `helm template` and
# `helm lint` assume (one minor above the client-go helm is built with).
k8s_modules=$(awk '$1=="k8s.io/client-go" {print $2; exit}' "$here/go.mod")
k8s_modules=${k8s_modules#v}
k8s_major=$((${k8s_modules%%.*} + 1))
k8s_minor=${k8s_modules#*.}; k8s_minor=${k8s_minor%%.*}
ldflags="-s -w \
 -X helm.sh/helm/v3/internal/version.version=$helm_version \
 -X helm.sh/helm/v3/internal/version.gitTreeState=clean \
 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$k8s_major \
 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$k8s_minor \
 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$k8s_major \
 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$k8s_minor"

echo "building helm $helm_version from helm.sh/helm/v3/cmd/helm" >&2
(cd "$here" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$bin.tmp.$$" \
  helm.sh/helm/v3/cmd/helm)
mv "$bin.tmp.$$" "$bin"
"$bin" version --short >&2
echo "$bin"
