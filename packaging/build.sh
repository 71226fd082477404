#!/usr/bin/env bash
# `make package`: the PyInstaller bundle, the .deb and (when makensis exists) the Windows installer
# built around the Linux bundle as a stand-in payload.
#
#   bash packaging/build.sh [--reuse-bundle] [--no-nsis]
#
#   --reuse-bundle  keep dist/intelwatt if nothing it freezes changed since it was built (tests)
#   --no-nsis       skip the installer even if makensis is installed
#
# Outputs (dist/): intelwatt/ (the bundle), intelwatt-console_<version>_<arch>.deb,
# intelwatt-console-<version>-linux-payload-setup.exe. Work files go to build/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv=${VENV:-.venv}
python="$venv/bin/python"
reuse=0 nsis=1
for arg in "$@"; do
    case "$arg" in
        --reuse-bundle) reuse=1 ;;
        --no-nsis) nsis=0 ;;
        *) echo "build.sh: unknown option $arg (use --reuse-bundle, --no-nsis)" >&2; exit 2 ;;
    esac
done
[ -x "$python" ] || { echo "build.sh: $python not found; run 'make venv' first" >&2; exit 2; }

version=$("$python" packaging/version_info.py)
version4=$("$python" packaging/version_info.py --windows)
echo "== intelwatt-console $version"

if ! "$python" -c 'import PyInstaller' 2>/dev/null; then
    if grep -qE '^package = ' pyproject.toml; then
        "$python" -m pip install --quiet -e ".[package]"
    else
        echo "build.sh: PyInstaller is not installed; add the 'package' extra to pyproject.toml" \
             "or run: $python -m pip install 'pyinstaller>=6.10' pyinstaller-hooks-contrib" >&2
        exit 2
    fi
fi

bundle=dist/intelwatt
stamp=$bundle/.intelwatt-version
fresh() {  # the bundle was stamped with this version after the last change to what it freezes
    [ -x "$bundle/intelwatt" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ] \
        && [ -z "$(find app resources packaging/pyinstaller main.py -newer "$stamp" -print -quit)" ]
}
if [ "$reuse" = 1 ] && fresh; then
    echo "== reusing $bundle ($version)"
else
    echo "== PyInstaller bundle -> $bundle"
    "$venv/bin/pyinstaller" --noconfirm --clean --log-level WARN \
        --distpath dist --workpath build/pyinstaller packaging/pyinstaller/intelwatt.spec
    echo "$version" > "$stamp"
fi
# Frozen smoke test: the bundle starts and reports the version it was stamped with.
frozen=$("$bundle/intelwatt" --version)
[ "$frozen" = "intelwatt-console $version" ] \
    || { echo "build.sh: the bundle says '$frozen', expected $version" >&2; exit 1; }

if command -v dpkg-deb >/dev/null; then
    echo "== .deb"
    deb=$(bash packaging/linux/build-deb.sh "$bundle" dist | tail -n 1)
    echo "   $deb ($(du -h "$deb" | cut -f1))"
else
    echo "== .deb skipped: dpkg-deb not found"
fi

if [ "$nsis" = 1 ] && command -v makensis >/dev/null; then
    echo "== NSIS installer (Linux bundle as stand-in payload; the real one is built on Windows CI)"
    exe="dist/intelwatt-console-$version-linux-payload-setup.exe"
    makensis -WX -V2 -DVERSION="$version" -DVERSION4="$version4" -DPAYLOAD="$root/$bundle" \
        -DOUTFILE="$root/$exe" -DEXE=intelwatt packaging/windows/intelwatt.nsi
    echo "   $exe ($(du -h "$exe" | cut -f1))"
elif [ "$nsis" = 1 ]; then
    echo "== NSIS installer skipped: makensis not found (apt-get install nsis)"
fi
