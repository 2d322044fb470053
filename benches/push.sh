#!/bin/sh
# `dev push` of the image `dev build` makes from the Debian minbase image vs `podman push` of
# that Debian image, both to a second local registry, as the unprivileged test user: cold (a
# registry that never held anything, restarted empty before each trial) and warm (everything
# already there). dev streams the base layer from the first registry as it is; podman
# compresses it again from its store. One hyperfine run; writes the ratios into README.md.
#   DEV_BENCH_CACHE  where the debootstrapped image is kept (default /var/cache/dev-bench)
#   RUNS             hyperfine runs per command (default 5)
set -eu
RUNS=${RUNS:-5}
. "$(dirname "$0")/lib.sh"

# A second registry, the destination, restarted empty by `$WORK/fresh-dest` (a cold trial).
PORT2=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
DEST="127.0.0.1:$PORT2"
cat > "$WORK/dest.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $WORK/dest}}
http: {addr: $DEST}
YML
cat > "$WORK/fresh-dest" <<SH
#!/bin/sh
[ -f $WORK/dest.pid ] && kill \$(cat $WORK/dest.pid) 2>/dev/null && sleep 0.2
rm -rf $WORK/dest
docker-registry serve $WORK/dest.yml >>$WORK/dest.log 2>&1 &
echo \$! > $WORK/dest.pid
for _ in \$(seq 100); do curl -fs http://$DEST/v2/ >/dev/null 2>&1 && break; sleep 0.05; done
sync
SH
chmod 0755 "$WORK/fresh-dest"
stop_dest() { [ -f "$WORK/dest.pid" ] && kill "$(cat "$WORK/dest.pid")" 2>/dev/null || true; }
trap 'stop_dest; cleanup' EXIT INT TERM
cat >> "$WORK/home/.config/containers/registries.conf" <<CONF
[[registry]]
location = "$DEST"
insecure = true
CONF

# The image: `dev build` of a project on the Debian image (its layer as the registry has it,
# dev's config); podman gets the same Debian image.
"$WORK/fresh-dest"
$AS "$WORK/bin/dev" build -q >/dev/null
$AS podman pull -q "$IMAGE" >/dev/null
DEV_PUSH="$AS $WORK/bin/dev push -q $DEST/bench/dev:1"
POD_PUSH="$AS podman push -q --tls-verify=false $IMAGE $DEST/bench/podman:1"
# Sanity: both push.
$DEV_PUSH >/dev/null
$POD_PUSH >/dev/null

hyperfine --runs "$RUNS" --warmup 1 --export-json "$WORK/push.json" \
    --prepare "$WORK/fresh-dest" -n "dev push (cold)" "$DEV_PUSH" \
    --prepare "$WORK/fresh-dest" -n "podman push (cold)" "$POD_PUSH" \
    --prepare "sync" -n "dev push (warm)" "$DEV_PUSH" \
    --prepare "sync" -n "podman push (warm)" "$POD_PUSH"

python3 - "$WORK/push.json" "$(stat -c %s "$CACHE/layer.tar.gz")" "$ROOT/README.md" <<'PY'
import json, re, sys
res = {r["command"]: r["median"] for r in json.load(open(sys.argv[1]))["results"]}
gz = int(sys.argv[2]) / 1e6
dc, pc, dw, pw = (res[k] for k in ("dev push (cold)", "podman push (cold)", "dev push (warm)", "podman push (warm)"))
lines = [
    f"Image: `dev build` of a project on Debian bookworm minbase (one {gz:.1f} MB gzip layer), pushed to a second local registry; podman pushes the same Debian image from its store. Median of the hyperfine runs; cold: the destination restarted empty before each trial; warm: it has everything:",
    "",
    "| command | cold | warm |",
    "|---|---|---|",
    f"| `dev push` | {dc*1000:.0f} ms | {dw*1000:.0f} ms |",
    f"| `podman push` (rootless) | {pc*1000:.0f} ms | {pw*1000:.0f} ms |",
    "",
    f"`dev push` is **{pc/dc:.1f}x faster** than `podman push` cold (it sends the base layer as the source registry has it; podman compresses it again) and **{pw/dw:.1f}x** warm ({dw*1000:.0f} ms: a HEAD per blob and the manifest).",
]
text = "\n".join(lines)
print(text)
readme = open(sys.argv[3]).read()
readme = re.sub(r"<!-- bench:push -->.*?<!-- /bench:push -->", "<!-- bench:push -->\n" + text + "\n<!-- /bench:push -->", readme, flags=re.S)
open(sys.argv[3], "w").write(readme)
PY
