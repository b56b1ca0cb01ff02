#!/usr/bin/env bash
# Vendor OpenSeadragon from the npm registry into wsi_streamer/server/static/openseadragon/.
# Usage: scripts/vendor_openseadragon.sh [VERSION]   (default: the pinned version below)
# Needs npm and tar; copies only the minified build, its images and the licence, then rewrites
# the folder's README.md with the version.
set -euo pipefail

VERSION="${1:-5.0.1}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/wsi_streamer/server/static/openseadragon"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

(cd "$WORK" && npm pack --silent "openseadragon@$VERSION" >/dev/null)
tar -xzf "$WORK"/openseadragon-*.tgz -C "$WORK"
PKG="$WORK/package"
ACTUAL="$(node -p "require('$PKG/package.json').version" 2>/dev/null || echo "$VERSION")"

rm -rf "$DEST"
mkdir -p "$DEST"
# The source map comment would make devtools request a file we do not ship.
sed '/^\/\/# sourceMappingURL=/d' "$PKG/build/openseadragon/openseadragon.min.js" \
    > "$DEST/openseadragon.min.js"
cp -r "$PKG/build/openseadragon/images" "$DEST/images"
cp "$PKG/LICENSE.txt" "$DEST/LICENSE.txt"

cat > "$DEST/README.md" <<README
# OpenSeadragon $ACTUAL (vendored)

- Source: npm package \`openseadragon@$ACTUAL\` (https://www.npmjs.com/package/openseadragon),
  files \`build/openseadragon/openseadragon.min.js\` (source-map comment removed) and
  \`build/openseadragon/images/\`.
- Licence: BSD 3-Clause, see \`LICENSE.txt\` (copied unchanged from the package).
- Refresh with \`scripts/vendor_openseadragon.sh [VERSION]\`; do not edit these files by hand.
README
echo "vendored openseadragon $ACTUAL into $DEST"
