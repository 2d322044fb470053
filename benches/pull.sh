#!/bin/sh
# Cold pull of a real Debian image, side by side in one hyperfine run, as the same unprivileged
# user (devtest-sub, which has a subordinate id range): `dev pull` vs rootless `podman pull`
# (native overlay), with `gzip -dc` of the layer as the floor. Also peak RSS of `dev pull`.
# Run as root after `./install.sh --dev`. Writes the figures into README.md.
#   DEV_BENCH_CACHE  where the debootstrapped image is kept (default /var/cache/dev-bench)
#   RUNS             hyperfine runs per command (default 5)
set -eu
[ "$(id -u)" = 0 ] || { echo "benches/pull.sh: run as root (it switches to the test user devtest-sub)" >&2; exit 1; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${DEV_BENCH_CACHE:-/var/cache/dev-bench}
RUNS=${RUNS:-5}
USER_NAME=devtest-sub
for tool in hyperfine podman debootstrap docker-registry curl; do
    command -v "$tool" >/dev/null || { echo "benches/pull.sh: \`$tool\` is missing; run ./install.sh --dev" >&2; exit 1; }
done
id "$USER_NAME" >/dev/null 2>&1 || { echo "benches/pull.sh: user $USER_NAME is missing; run ./install.sh --dev" >&2; exit 1; }

(cd "$ROOT" && cargo build --release --quiet)

# 1. The image: debootstrap --variant=minbase bookworm, one gzip layer (cached between runs).
mkdir -p "$CACHE"
if [ ! -f "$CACHE/layer.tar.gz" ]; then
    if [ ! -d "$CACHE/rootfs" ]; then
        rm -rf "$CACHE/rootfs.tmp"
        debootstrap --variant=minbase bookworm "$CACHE/rootfs.tmp" http://deb.debian.org/debian >/dev/null
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
# Runs a command as the test user, with no capabilities and only its own environment; a
# script rather than a shell function, because hyperfine runs commands with sh -c.
cat > "$WORK/as-user" <<SH
#!/bin/sh
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
chown -R "$USER_NAME:" "$WORK/home" "$WORK/run"
chmod 0700 "$WORK/run"


# Sanity: both pull the image.
$AS "$WORK/bin/dev" pull -q "$IMAGE" >/dev/null
$AS podman pull -q "$IMAGE" >/dev/null

# 5. One hyperfine run, cold stores each time. `sync` after each reset, so one run's
#    writeback is not billed to the next.
hyperfine --runs "$RUNS" --warmup 1 --export-json "$WORK/pull.json" \
    --prepare "rm -rf $WORK/home/data/dev; sync" -n "dev pull" "$AS $WORK/bin/dev pull -q $IMAGE" \
    --prepare "$AS podman system reset -f >/dev/null 2>&1; sync" -n "podman pull" "$AS podman pull -q $IMAGE" \
    --prepare "sync" -n "gzip -dc (floor)" "gzip -dc $CACHE/layer.tar.gz > /dev/null"

# 6. Peak RSS of a cold dev pull (dev and its helper processes).
rm -rf "$WORK/home/data/dev"; sync
RSS_KB=$(/usr/bin/time -f %M "$AS" "$WORK/bin/dev" pull -q "$IMAGE" 2>&1 >/dev/null | tail -n 1)

# 7. Ratios, printed and written into README.md.
python3 - "$WORK/pull.json" "$RSS_KB" "$(stat -c %s "$CACHE/layer.tar.gz")" "$(stat -c %s "$CACHE/layer.tar")" "$ROOT/README.md" <<'PY'
import json, re, sys
res = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
rss_mib = int(sys.argv[2]) / 1024
gz, raw = int(sys.argv[3]) / 1e6, int(sys.argv[4]) / 1e6
dev, pod, floor = (res[k]["median"] for k in ("dev pull", "podman pull", "gzip -dc (floor)"))
lines = [
    f"Image: Debian bookworm minbase (debootstrap), one layer, {gz:.1f} MB gzip / {raw:.1f} MB tar. Median of the hyperfine runs, cold stores:",
    "",
    "| command | median | ratio |",
    "|---|---|---|",
    f"| `dev pull` | {dev*1000:.0f} ms | 1.00 |",
    f"| `podman pull` (rootless, native overlay) | {pod*1000:.0f} ms | {pod/dev:.2f}x dev |",
    f"| `gzip -dc` of the layer (floor) | {floor*1000:.0f} ms | dev is {dev/floor:.2f}x the floor |",
    "",
    f"`dev pull` is **{pod/dev:.1f}x faster** than `podman pull` and **{dev/floor:.2f}x** the `gzip -dc` floor; peak RSS {rss_mib:.1f} MiB.",
]
text = "\n".join(lines)
print(text)
readme = open(sys.argv[5]).read()
readme = re.sub(r"<!-- bench:pull -->.*?<!-- /bench:pull -->", "<!-- bench:pull -->\n" + text + "\n<!-- /bench:pull -->", readme, flags=re.S)
open(sys.argv[5], "w").write(readme)
PY
