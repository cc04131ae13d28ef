#!/usr/bin/env bash
# Offline checks of the deployment files: Dockerfile (hadolint), docker-compose.yml
# and deploy/compose.secure.yml (yamllint, the Compose spec schema), deploy/k8s and
# the patches of the overlays deploy/k8s-secure and deploy/k8s-secure-tls (yamllint,
# Kubernetes schemas 1.27 and 1.37, strict; where kubectl is installed, each overlay
# rendered by `kubectl kustomize` too), deploy/prometheus (promtool), shell scripts
# (shellcheck).
# Then a self-test: each validator must reject a deliberately broken copy.
#
# Installs what is missing, once, under $CRUSTYRING_TOOLS (default
# ~/.cache/crustyring-deploy-tools): the PyPI validators pinned in
# deploy/requirements-validate.txt (a venv), promtool unpacked from Debian's
# prometheus package, shellcheck from Debian. Needs no network after that.
set -euo pipefail
cd "$(dirname "$0")/.."

tools=${CRUSTYRING_TOOLS:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/crustyring-deploy-tools}
requirements=deploy/requirements-validate.txt
k8s_versions=(1.27.0 1.37.0)
mkdir -p "$tools"

apt_ready=
apt_update_once() {
  if [[ -z $apt_ready ]]; then
    apt-get update -qq
    apt_ready=1
  fi
}

# The PyPI validators, in their own venv; reinstalled when the pins change.
pins=$(sha256sum "$requirements" | cut -d' ' -f1)
if [[ ! -x $tools/venv/bin/kubernetes-validate || "$(cat "$tools/venv/pins" 2>/dev/null)" != "$pins" ]]; then
  echo "== installing validators from $requirements"
  rm -rf "$tools/venv"
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  echo "$pins" >"$tools/venv/pins"
fi
export PATH="$tools/venv/bin:$PATH"

# promtool: unpacked from Debian's prometheus package rather than installed, since
# installing the package would also start a Prometheus server.
if command -v promtool >/dev/null 2>&1; then
  promtool=$(command -v promtool)
else
  promtool=$tools/promtool
  if [[ ! -x $promtool ]]; then
    echo "== unpacking promtool from Debian's prometheus package"
    deb_dir=$(mktemp -d)
    chmod 0777 "$deb_dir" # apt's download user writes here
    (cd "$deb_dir" && { apt-get download -qq prometheus 2>/dev/null || { apt_update_once && apt-get download -qq prometheus; }; })
    dpkg-deb --fsys-tarfile "$deb_dir"/prometheus_*.deb | tar -xO ./usr/bin/promtool >"$promtool.part"
    chmod +x "$promtool.part"
    mv "$promtool.part" "$promtool"
    rm -rf "$deb_dir"
  fi
fi

if ! command -v shellcheck >/dev/null 2>&1; then
  echo "== installing shellcheck (Debian)"
  apt_update_once
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null
fi

echo "== validators: $(hadolint --version | tr -d '\n'); yamllint $(yamllint --version | cut -d' ' -f2);" \
  "check-jsonschema $(check-jsonschema --version | awk '{print $NF}');" \
  "kubernetes-validate $(kubernetes-validate --version | awk '{print $NF}');" \
  "promtool $("$promtool" --version | head -1 | awk '{print $3}'); shellcheck $(shellcheck --version | awk '/^version:/ {print $2}')"

k8s_manifests=()
for f in deploy/k8s/*.yaml; do
  [[ $(basename "$f") == kustomization.yaml ]] || k8s_manifests+=("$f")
done
# The overlays' patches restate what a StatefulSet requires, so each validates on
# its own like the base's files.
k8s_overlays=(deploy/k8s-secure deploy/k8s-secure-tls)
overlay_patches=()
for f in deploy/k8s-secure/*.yaml deploy/k8s-secure-tls/*.yaml; do
  [[ $(basename "$f") == kustomization.yaml ]] || overlay_patches+=("$f")
done

# Each check, on the given files; a check that fails prints why.
check_shell() { shellcheck "$@"; }
check_dockerfile() { hadolint --no-color "$@"; }
check_yaml() { yamllint --strict -c deploy/yamllint.yml "$@"; }
check_compose() { check-jsonschema --builtin-schema vendor.compose-spec "$@"; }
check_k8s() {
  local v
  for v in "${k8s_versions[@]}"; do
    kubernetes-validate --strict --quiet -k "$v" "$@"
  done
}
check_prometheus() { "$promtool" check config "$@"; }
# The overlay DIR rendered (kubectl kustomize) and validated, in a copy of
# deploy/ holding placeholder secret files where the user's real ones go; the
# copy's overlay is DIR's, so that a broken copy can be checked too.
check_overlay() { # DIR [OVERLAY-NAME]
  local dir=$1 name=${2:-$(basename "$1")} copy f
  copy=$(mktemp -d)
  cp -r deploy/k8s deploy/k8s-secure deploy/k8s-secure-tls "$copy"/
  rm -rf "${copy:?}/$name"
  cp -r "$dir" "$copy/$name"
  for f in k8s-secure/cluster.secret k8s-secure/client.token \
    k8s-secure-tls/tls.crt k8s-secure-tls/tls.key k8s-secure-tls/ca.crt; do
    echo "placeholder-not-a-secret" >"$copy/$f"
  done
  local rc=0
  kubectl kustomize "$copy/$name" >"$copy/rendered.yaml" && check_k8s "$copy/rendered.yaml" || rc=1
  rm -rf "$copy"
  return "$rc"
}

echo "== shellcheck"
check_shell deploy/validate.sh deploy/healthcheck.sh
echo "== hadolint Dockerfile"
check_dockerfile Dockerfile
echo "== yamllint"
check_yaml docker-compose.yml deploy/
echo "== docker-compose.yml against the Compose spec"
check_compose docker-compose.yml deploy/compose.secure.yml
echo "== deploy/k8s against Kubernetes ${k8s_versions[*]} (strict)"
check_k8s "${k8s_manifests[@]}"
echo "== overlay patches against Kubernetes ${k8s_versions[*]} (strict)"
check_k8s "${overlay_patches[@]}"
if command -v kubectl >/dev/null 2>&1; then
  for overlay in "${k8s_overlays[@]}"; do
    echo "== $overlay rendered (kubectl kustomize) against Kubernetes ${k8s_versions[*]}"
    check_overlay "$overlay"
  done
else
  echo "== kubectl not found: overlays checked as patches only, not rendered"
fi
echo "== promtool check config"
check_prometheus deploy/prometheus/prometheus.yml

# Self-test: a broken copy of each kind of file must be rejected.
echo "== self-test: each validator rejects a broken file"
broken=$(mktemp -d)
trap 'rm -rf "$broken"' EXIT
must_fail() {
  local what=$1
  shift
  if "$@" >"$broken/out" 2>&1; then
    echo "FAIL: $what was accepted" >&2
    cat "$broken/out" >&2
    exit 1
  fi
  echo "rejected as it should: $what"
}
# shellcheck disable=SC2016 # the broken script's text, unexpanded
printf '#!/bin/sh\nrm -rf $1/*\n' >"$broken/bad.sh"
must_fail "unquoted variable (shellcheck)" check_shell "$broken/bad.sh"
sed 's|^WORKDIR /src$|RUN cd /src|' Dockerfile >"$broken/Dockerfile"
must_fail "RUN cd instead of WORKDIR (hadolint)" check_dockerfile "$broken/Dockerfile"
sed 's|^  node2:$|  node1:|' docker-compose.yml >"$broken/dup.yml"
must_fail "duplicate service key (yamllint)" check_yaml "$broken/dup.yml"
sed 's|stop_grace_period: 60s|stop_grace_period: [60s]|' docker-compose.yml >"$broken/compose.yml"
must_fail "stop_grace_period not a duration (Compose spec)" check_compose "$broken/compose.yml"
sed 's|readinessProbe:|readinesProbe:|' deploy/k8s/nodes.yaml >"$broken/nodes.yaml"
must_fail "misspelt readinessProbe (Kubernetes schema)" check_k8s "$broken/nodes.yaml"
sed 's|containerPort: 50001|containerPort: "50001"|' deploy/k8s/nodes.yaml >"$broken/port.yaml"
must_fail "containerPort as a string (Kubernetes schema)" check_k8s "$broken/port.yaml"
sed 's|readOnly: true|readOnly: "true"|' deploy/k8s-secure/nodes.yaml >"$broken/secure-nodes.yaml"
must_fail "readOnly as a string in an overlay patch (Kubernetes schema)" check_k8s "$broken/secure-nodes.yaml"
sed 's|scheme: HTTPS|schema: HTTPS|' deploy/k8s-secure-tls/registry.yaml >"$broken/tls-registry.yaml"
must_fail "misspelt scheme in an overlay patch (Kubernetes schema)" check_k8s "$broken/tls-registry.yaml"
if command -v kubectl >/dev/null 2>&1; then
  mkdir "$broken/k8s-secure"
  cp deploy/k8s-secure/* "$broken/k8s-secure/"
  sed -i 's|^  name: crustyring$|  name: crustyring-nodes|' "$broken/k8s-secure/nodes.yaml"
  must_fail "overlay patching a StatefulSet the base lacks (kubectl kustomize)" \
    check_overlay "$broken/k8s-secure" k8s-secure
fi
sed 's|metrics_path: /metrics|metric_path: /metrics|' deploy/prometheus/prometheus.yml >"$broken/prometheus.yml"
must_fail "unknown field metric_path (promtool)" check_prometheus "$broken/prometheus.yml"
echo "deploy/validate.sh: all checks passed"
