#!/usr/bin/env bash
# Build the intelwatt-console .deb from a PyInstaller one-folder bundle.
# Usage: packaging/linux/build-deb.sh BUNDLE_DIR OUT_DIR
#   BUNDLE_DIR  the folder holding the `intelwatt` executable (dist/intelwatt)
#   OUT_DIR     where intelwatt-console_<version>_<arch>.deb is written
# Prints the path of the .deb as its last line.
# DEB_COMPRESSION=fast uses gzip -1 instead of xz (tests: seconds instead of minutes, ~25% larger).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bundle=${1:?usage: build-deb.sh BUNDLE_DIR OUT_DIR}
out=${2:?usage: build-deb.sh BUNDLE_DIR OUT_DIR}
[ -x "$bundle/intelwatt" ] || { echo "build-deb: $bundle/intelwatt is missing or not executable" >&2; exit 2; }
command -v dpkg-deb >/dev/null || { echo "build-deb: dpkg-deb not found (apt-get install dpkg)" >&2; exit 2; }

version=$(python3 "$root/packaging/version_info.py")
arch=$(dpkg --print-architecture)
mkdir -p "$out"
out=$(cd "$out" && pwd)
pkgroot=$(mktemp -d "${TMPDIR:-/tmp}/intelwatt-deb.XXXXXX")
trap 'rm -rf "$pkgroot"' EXIT
prefix=/opt/intelwatt-console

install -d "$pkgroot/DEBIAN" "$pkgroot$prefix" "$pkgroot/usr/bin" \
    "$pkgroot/usr/share/applications" "$pkgroot/usr/share/icons/hicolor/256x256/apps" \
    "$pkgroot/usr/share/icons/hicolor/scalable/apps" "$pkgroot/lib/systemd/system" \
    "$pkgroot/etc/intelwatt/trust" "$pkgroot/usr/share/doc/intelwatt-console"
cp -a "$bundle/." "$pkgroot$prefix/"
ln -s "$prefix/intelwatt" "$pkgroot/usr/bin/intelwatt"
install -m 0644 "$here/intelwatt-console.desktop" "$pkgroot/usr/share/applications/"
install -m 0644 "$root/resources/icons/intelwatt.png" \
    "$pkgroot/usr/share/icons/hicolor/256x256/apps/intelwatt-console.png"
install -m 0644 "$root/resources/icons/intelwatt.svg" \
    "$pkgroot/usr/share/icons/hicolor/scalable/apps/intelwatt-console.svg"
install -m 0644 "$here/intelwatt-headless.service" "$pkgroot/lib/systemd/system/"
install -m 0644 "$root/resources/trust/intelwatt-dev.pub" "$pkgroot/etc/intelwatt/trust/"
install -m 0644 "$root/CHANGELOG.md" "$pkgroot/usr/share/doc/intelwatt-console/CHANGELOG.md"

# The site file for the headless service: the demo site with paths made absolute for this layout
# (relative paths in a site file are relative to the working directory of the process).
resources=$prefix/_internal/resources
sed -e "s|^package = \"resources/agents/|package = \"$resources/agents/|" \
    -e 's|^trust_store = "resources/trust"|trust_store = "/etc/intelwatt/trust"|' \
    -e 's|^# staging_dir = "/var/lib/intelwatt/staging"|staging_dir = "/var/lib/intelwatt/staging"|' \
    "$root/resources/sites/demo-ro.toml" > "$pkgroot/etc/intelwatt/site.toml"
grep -q '^trust_store = "/etc/intelwatt/trust"' "$pkgroot/etc/intelwatt/site.toml" \
    || { echo "build-deb: resources/sites/demo-ro.toml no longer has the [agents] lines to adapt" >&2; exit 1; }

installed_kb=$(du -sk --exclude=DEBIAN "$pkgroot" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@INSTALLED_SIZE_KB@/$installed_kb/" \
    "$here/debian/control.in" > "$pkgroot/DEBIAN/control"
install -m 0644 "$here/debian/conffiles" "$pkgroot/DEBIAN/conffiles"
for script in postinst prerm postrm; do
    install -m 0755 "$here/debian/$script" "$pkgroot/DEBIAN/$script"
done

deb="$out/intelwatt-console_${version}_${arch}.deb"
if [ "${DEB_COMPRESSION:-xz}" = fast ]; then compress=(-Zgzip -z1); else compress=(-Zxz); fi
dpkg-deb --build --root-owner-group "${compress[@]}" "$pkgroot" "$deb" >/dev/null
echo "$deb"
