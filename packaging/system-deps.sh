#!/usr/bin/env bash
# Install the Debian packages whose shared libraries Qt (PySide6) needs, if any are missing.
# Usage: packaging/system-deps.sh VENV
set -euo pipefail
venv=${1:-.venv}
qt=$("$venv/bin/python" -c 'import PySide6, os; print(os.path.join(os.path.dirname(PySide6.__file__), "Qt"))')
libs=("$qt/lib/libQt6Gui.so.6" "$qt/plugins/platforms/libqoffscreen.so" "$qt/plugins/platforms/libqxcb.so")
missing=$(for f in "${libs[@]}"; do [ -e "$f" ] && ldd "$f" 2>/dev/null; done | awk '/not found/ {print $1}' | sort -u)
[ -z "$missing" ] && exit 0

# shared library -> Debian package (Debian 12 / Ubuntu 22.04+ names)
declare -A pkg=(
  [libEGL.so.1]=libegl1 [libGL.so.1]=libgl1 [libOpenGL.so.0]=libopengl0
  [libfontconfig.so.1]=libfontconfig1 [libfreetype.so.6]=libfreetype6 [libdbus-1.so.3]=libdbus-1-3
  [libxkbcommon.so.0]=libxkbcommon0 [libxkbcommon-x11.so.0]=libxkbcommon-x11-0
  [libglib-2.0.so.0]=libglib2.0-0 [libgthread-2.0.so.0]=libglib2.0-0
  [libX11.so.6]=libx11-6 [libX11-xcb.so.1]=libx11-xcb1 [libxcb.so.1]=libxcb1
  [libxcb-cursor.so.0]=libxcb-cursor0 [libxcb-icccm.so.4]=libxcb-icccm4
  [libxcb-keysyms.so.1]=libxcb-keysyms1 [libxcb-image.so.0]=libxcb-image0
  [libxcb-render-util.so.0]=libxcb-render-util0 [libxcb-shape.so.0]=libxcb-shape0
  [libxcb-xinerama.so.0]=libxcb-xinerama0 [libxcb-xkb.so.1]=libxcb-xkb1 [libxcb-randr.so.0]=libxcb-randr0
  [libxcb-render.so.0]=libxcb-render0 [libxcb-shm.so.0]=libxcb-shm0 [libxcb-sync.so.1]=libxcb-sync1
  [libxcb-xfixes.so.0]=libxcb-xfixes0 [libxcb-util.so.1]=libxcb-util1 [libxcb-glx.so.0]=libxcb-glx0
  [libSM.so.6]=libsm6 [libICE.so.6]=libice6 [libxcb-shape.so.0]=libxcb-shape0
)
want=()
for lib in $missing; do
  if [ -n "${pkg[$lib]:-}" ]; then want+=("${pkg[$lib]}"); else echo "system-deps: no package known for $lib" >&2; fi
done
[ ${#want[@]} -eq 0 ] && exit 0
mapfile -t want < <(printf '%s\n' "${want[@]}" | sort -u)
echo "system-deps: Qt needs ${want[*]}"
if [ "$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo"; else
  echo "system-deps: run as root: apt-get install ${want[*]}" >&2; exit 1; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${want[@]}"
