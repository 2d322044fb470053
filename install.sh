#!/bin/sh
# Installs dev: runtime dependencies (uidmap, fuse-overlayfs) and the binary into
# ${PREFIX:-$HOME/.local}/bin. With --dev, also what the test suite and benchmarks need:
# docker-registry, zstd, hyperfine, libdeflate-tools, podman, bubblewrap, busybox-static, debootstrap, procps (pgrep), the unprivileged test users
# (devtest-sub and devtest-sub2 with a subordinate id range, devtest-nosub without) and /dev/fuse at 0666.
set -eu

DEV=0
for arg in "$@"; do
    case "$arg" in
        --dev) DEV=1 ;;
        -h|--help) sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown option \`$arg\` (use --dev or --help)" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")"

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else return 1
    fi
}

RUNTIME_PKGS="uidmap fuse-overlayfs"
TEST_PKGS="docker-registry zstd hyperfine debootstrap podman runc util-linux busybox-static bubblewrap python3 gcc libc6-dev tar e2fsprogs libdeflate-tools procps"
# catatonit: podman kube play builds its pod's pause image from it, with no network.
TEST_PKGS="$TEST_PKGS catatonit"
TEST_PKGS="$TEST_PKGS skopeo"
TEST_PKGS="$TEST_PKGS xvfb xauth weston pulseaudio dbus-daemon"

missing=""
for pkg in $RUNTIME_PKGS; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
if [ "$DEV" = 1 ]; then
    for pkg in $TEST_PKGS; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
    done
fi

if [ -n "$missing" ]; then
    if command -v apt-get >/dev/null 2>&1; then
        echo "installing:$missing"
        as_root apt-get update -qq || { echo "install.sh: run as root or install:$missing" >&2; exit 1; }
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    elif command -v dnf >/dev/null 2>&1; then
        as_root dnf install -y shadow-utils fuse-overlayfs || { echo "install.sh: install shadow-utils and fuse-overlayfs" >&2; exit 1; }
    else
        echo "install.sh: please install with your package manager:$missing" >&2
        [ "$DEV" = 1 ] && exit 1
    fi
fi

if [ "$DEV" = 1 ]; then
    # Test users: two with a subordinate id range ("two teammates"), one without.
    for u in devtest-sub devtest-sub2 devtest-nosub; do
        id "$u" >/dev/null 2>&1 || as_root useradd --create-home --shell /bin/sh "$u"
    done
    for f in /etc/subuid /etc/subgid; do
        as_root touch "$f"
        as_root sed -i '/^devtest-nosub:/d' "$f"
        grep -q '^devtest-sub:' "$f" || echo "devtest-sub:300000:65536" | as_root tee -a "$f" >/dev/null
        grep -q '^devtest-sub2:' "$f" || echo "devtest-sub2:400000:65536" | as_root tee -a "$f" >/dev/null
    done
    # Desktop distributions ship /dev/fuse world-usable; some servers do not.
    if [ -e /dev/fuse ] && [ "$(stat -c %a /dev/fuse)" != 666 ]; then
        as_root chmod 0666 /dev/fuse
    fi
    # The registry package starts a system service on :5000 where it can; the tests run their own.
    as_root sh -c 'command -v systemctl >/dev/null && systemctl disable --now docker-registry 2>/dev/null || true'
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "install.sh: cargo is needed to build dev (https://rustup.rs)" >&2
    exit 1
fi

if [ "$DEV" = 0 ]; then
    cargo build --release --locked 2>/dev/null || cargo build --release
    BIN="${PREFIX:-$HOME/.local}/bin"
    mkdir -p "$BIN"
    install -m 0755 target/release/dev "$BIN/dev"
    echo "installed $BIN/dev"
    case ":$PATH:" in *":$BIN:"*) ;; *) echo "add $BIN to your PATH" ;; esac
fi
