#!/bin/sh
# Build (or reuse) an emulated aarch64 Debian root for `make arm64-check`: debootstrap + qemu user mode.
#   scripts/arm64_root.sh ROOT HOST_PYTHON
# Needs root, debootstrap, qemu-user-static and binfmt-support (apt-get install debootstrap qemu-user-static
# binfmt-support). The root gets Debian's python3 + python3-numpy (a board with numpy but no onnxruntime) and
# /opt/venv with the aarch64 wheels of numpy, onnxruntime and opencv-python-headless at the host's versions.
# /proc stays unmounted inside: qemu does not emulate /proc/cpuinfo and onnxruntime's CPU probe would read the
# host's x86 file (docs/arm64.md). Written to ROOT.partial and renamed when complete.
set -eu
ROOT=$1
HOST_PYTHON=$2
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if [ -x "$ROOT/opt/venv/bin/python" ]; then
    echo "arm64 root: reusing $ROOT"
    exit 0
fi
for tool in debootstrap qemu-aarch64-static; do
    command -v "$tool" >/dev/null || { echo "error: $tool not found (apt-get install debootstrap qemu-user-static binfmt-support)" >&2; exit 1; }
done
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    update-binfmts --enable qemu-aarch64
fi
PARTIAL="$ROOT.partial"
rm -rf "$PARTIAL"
mkdir -p "$PARTIAL"
echo "arm64 root: debootstrap bookworm into $PARTIAL (about 5 minutes)"
debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,python3-pip,python3-numpy \
    bookworm "$PARTIAL" "$MIRROR" >"$PARTIAL.log" 2>&1 || { echo "error: debootstrap failed, see $PARTIAL.log" >&2; exit 1; }
umount "$PARTIAL/proc" 2>/dev/null || true
# The host's versions, so that both sides run the same onnxruntime release.
PINS=$("$HOST_PYTHON" -c 'from importlib.metadata import version as v; print(" ".join(p + "==" + v(p) for p in ("numpy", "onnxruntime", "opencv-python-headless")))')
WHEELS="$PARTIAL/tmp/wheels"
mkdir -p "$WHEELS"
PYVER=$(chroot "$PARTIAL" /usr/bin/python3 -c 'import sys; print("{}.{}".format(*sys.version_info))')
echo "arm64 root: aarch64 wheels for Python $PYVER: $PINS"
# shellcheck disable=SC2086
"$HOST_PYTHON" -m pip download --quiet --only-binary=:all: --platform manylinux2014_aarch64 \
    --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 --python-version "$PYVER" \
    --implementation cp --dest "$WHEELS" $PINS
chroot "$PARTIAL" /usr/bin/python3 -m venv /opt/venv
# shellcheck disable=SC2086
chroot "$PARTIAL" /opt/venv/bin/pip install --quiet --no-index --find-links /tmp/wheels $PINS
rm -rf "$WHEELS"
mv "$PARTIAL" "$ROOT"
echo "arm64 root: ready at $ROOT"
