#!/usr/bin/env bash
# Proves the type tests can fail: widen ProxyMode to string in a scratch copy and expect tsc to
# report the now-unused @ts-expect-error directives in test/types.test.ts.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
cp -r "$root/src" "$root/test" "$root/tsconfig.json" "$scratch/"
ln -s "$root/node_modules" "$scratch/node_modules"
sed -i "s/^export type ProxyMode = 'non-transparent';/export type ProxyMode = string;/" "$scratch/src/mode.ts"
grep -q "export type ProxyMode = string;" "$scratch/src/mode.ts"
cat > "$scratch/tsconfig.check.json" <<'JSON'
{ "extends": "./tsconfig.json", "compilerOptions": { "noEmit": true }, "include": ["src", "test/types.test.ts"] }
JSON
if out="$(cd "$scratch" && npx tsc -p tsconfig.check.json 2>&1)"; then
  echo "type tests did NOT fail with ProxyMode widened to string" >&2
  exit 1
fi
if ! grep -q "TS2578" <<<"$out"; then
  echo "tsc failed, but not on an unused @ts-expect-error:" >&2
  echo "$out" >&2
  exit 1
fi
echo "ok: widening ProxyMode makes the type tests fail ($(grep -c TS2578 <<<"$out") unused directives)"
