# Shared set-up of the benchmarks, sourced by benches/*.sh (as root, after ./install.sh --dev):
# builds dev, a Debian bookworm minbase image (debootstrap, cached), a registry on a free
# loopback port with the image pushed through its HTTP API, and a work dir for the test user
# with dev's store and podman's rootless config. Sets ROOT CACHE WORK AS IMAGE REG.
#   DEV_BENCH_CACHE  where the debootstrapped image is kept (default /var/cache/dev-bench)
[ "$(id -u)" = 0 ] || { echo "benches: run as root (they switch to the test user devtest-sub)" >&2; exit 1; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${DEV_BENCH_CACHE:-/var/cache/dev-bench}
USER_NAME=devtest-sub
for tool in hyperfine podman debootstrap docker-registry curl bwrap; do
    command -v "$tool" >/dev/null || { echo "benches: \`$tool\` is missing; run ./install.sh --dev" >&2; exit 1; }
done
id "$USER_NAME" >/dev/null 2>&1 || { echo "benches: user $USER_NAME is missing; run ./install.sh --dev" >&2; exit 1; }

(cd "$ROOT" && cargo build --release --quiet)

# 1. The image: debootstrap --variant=minbase bookworm, one gzip layer (cached between runs).
mkdir -p "$CACHE"
if [ ! -f "$CACHE/layer.tar.gz" ]; then
    if [ ! -d "$CACHE/rootfs" ]; then
        rm -rf "$CACHE/rootfs.tmp"
        debootstrap --variant=minbase bookworm "$CACHE/rootfs.tmp" >/dev/null
        mv "$CACHE/rootfs.tmp" "$CACHE/rootfs"
    fi
    # As official images do: no device nodes, no downloaded .debs, no apt lists.
    tar --numeric-owner --xattrs --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
        --exclude='./var/cache/apt/archives/*.deb' --exclude='./var/lib/apt/lists/*' \
        -C "$CACHE/rootfs" -cf "$CACHE/layer.tar" .
    gzip -6 -c "$CACHE/layer.tar" > "$CACHE/layer.tar.gz.tmp"
    mv "$CACHE/layer.tar.gz.tmp" "$CACHE/layer.tar.gz"
fi

# 2. A registry on a free loopback port, and a work dir the test user owns.
WORK=$(mktemp -d /tmp/dev-bench-XXXXXX)
chmod 0755 "$WORK"
mkdir -p "$WORK/project"
# Runs a command as the test user, in the project, with no capabilities and only its own
# environment; a script rather than a shell function, because hyperfine runs commands with sh -c.
cat > "$WORK/as-user" <<SH
#!/bin/sh
cd $WORK/project
exec setpriv --reuid=$USER_NAME --regid=$USER_NAME --init-groups --inh-caps=-all -- \
    env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=$WORK/home USER=$USER_NAME \
    XDG_DATA_HOME=$WORK/home/data XDG_CONFIG_HOME=$WORK/home/.config XDG_RUNTIME_DIR=$WORK/run "\$@"
SH
chmod 0755 "$WORK/as-user"
AS="$WORK/as-user"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
REG="http://127.0.0.1:$PORT"
cat > "$WORK/registry.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $WORK/registry}}
http: {addr: 127.0.0.1:$PORT}
YML
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
REG_PID=$!
cleanup() {
    kill "$REG_PID" 2>/dev/null || true
    awk -v w="$WORK/" 'index($2, w) == 1 {print $2}' /proc/mounts | xargs -r -n1 umount -l 2>/dev/null || true
    "$AS" podman system reset -f >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
for _ in $(seq 50); do curl -fs "$REG/v2/" >/dev/null 2>&1 && break; sleep 0.1; done

# 3. Push: layer, config, manifest through the registry's HTTP API.
REPO=bench/debian
push_blob() {
    d="sha256:$(sha256sum "$1" | cut -d' ' -f1)"
    loc=$(curl -fsS -X POST -D - -o /dev/null "$REG/v2/$REPO/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
    case $loc in /*) loc="$REG$loc" ;; esac
    case $loc in *\?*) sep='&' ;; *) sep='?' ;; esac
    curl -fsS -X PUT -H 'Content-Type: application/octet-stream' --data-binary @"$1" "$loc${sep}digest=$d" >/dev/null
    echo "$d"
}
LAYER=$(push_blob "$CACHE/layer.tar.gz")
DIFF="sha256:$(sha256sum "$CACHE/layer.tar" | cut -d' ' -f1)"
ARCH=$(dpkg --print-architecture)
printf '{"architecture":"%s","os":"linux","config":{"Cmd":["/bin/bash"]},"rootfs":{"type":"layers","diff_ids":["%s"]}}' "$ARCH" "$DIFF" > "$WORK/config.json"
CONFIG=$(push_blob "$WORK/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%s}]}' \
    "$CONFIG" "$(stat -c %s "$WORK/config.json")" "$LAYER" "$(stat -c %s "$CACHE/layer.tar.gz")" > "$WORK/manifest.json"
curl -fsS -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary @"$WORK/manifest.json" "$REG/v2/$REPO/manifests/bookworm" >/dev/null
IMAGE="127.0.0.1:$PORT/$REPO:bookworm"

# 4. The user's environment: dev's store and podman's rootless config (runc, cgroupfs, host net).
mkdir -p "$WORK/home/.config/containers" "$WORK/run" "$WORK/bin"
install -m 0755 "$ROOT/target/release/dev" "$WORK/bin/dev"
cat > "$WORK/home/.config/containers/containers.conf" <<CONF
[containers]
netns = "host"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
cat > "$WORK/home/.config/containers/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$WORK/home/podman-storage"
runroot = "$WORK/run/containers"
CONF
cat > "$WORK/home/.config/containers/registries.conf" <<CONF
[[registry]]
location = "127.0.0.1:$PORT"
insecure = true
CONF
printf 'image = "%s"\n' "$IMAGE" > "$WORK/project/dev.toml"
chown -R "$USER_NAME:" "$WORK/home" "$WORK/run" "$WORK/project"
chmod 0700 "$WORK/run"


