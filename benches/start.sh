#!/bin/sh
# Warm start of an env, side by side in one hyperfine run per user, image pulled and env
# created beforehand: `dev run -- true` vs `podman run --rm IMAGE true` vs bwrap on the same
# tree (the floor). hyperfine itself runs as the unprivileged user, so no wrapper is timed.
# Twice: as devtest-sub (subordinate range: dev runs newuidmap/newgidmap) and as devtest-nosub
# (a single-id map, as bwrap uses). Then a file-heavy workload (find /usr and read every file
# under /usr) in the env, once and twice per session, vs the same tree on the host.
# Run as root after `./install.sh --dev`. Writes the figures into README.md.
#   DEV_BENCH_CACHE  where the debootstrapped image is kept (default /var/cache/dev-bench)
#   RUNS             hyperfine runs per command (default 30; the workload runs 10)
set -eu
RUNS=${RUNS:-30}
. "$(dirname "$0")/lib.sh"

DEV="$WORK/bin/dev"
BWRAP="bwrap --unshare-user --unshare-pid --bind $CACHE/rootfs / --proc /proc --dev /dev"

# The same set-up for the user without a range: own store, own podman storage.
sed "s/$USER_NAME/devtest-nosub/g; s|$WORK/home|$WORK/home-nosub|g; s|$WORK/run|$WORK/run-nosub|g" \
    "$AS" > "$WORK/as-nosub"
chmod 0755 "$WORK/as-nosub"
mkdir -p "$WORK/run-nosub"
cp -a "$WORK/home" "$WORK/home-nosub"
rm -rf "$WORK/home-nosub/data" "$WORK/home-nosub/podman-storage"
sed -i "s|$WORK/home|$WORK/home-nosub|g; s|$WORK/run|$WORK/run-nosub|g" "$WORK/home-nosub/.config/containers/storage.conf"
chown -R devtest-nosub: "$WORK/home-nosub" "$WORK/run-nosub"
chmod 0700 "$WORK/run-nosub"
chmod 0777 "$WORK/project"
mkdir -p "$WORK/out" && chmod 0777 "$WORK/out"

for who in sub nosub; do
    as="$WORK/as-user"; [ "$who" = nosub ] && as="$WORK/as-nosub"
    # Warm: image pulled and env created for both tools; the overlay probe done.
    $as "$DEV" run -- true 2>/dev/null
    $as $BWRAP true
    # Rootless podman cannot unpack this image without a subordinate range (group 42 owns
    # /etc/gshadow); then it is left out, and the table says so.
    if $as podman pull -q "$IMAGE" >/dev/null 2>"$WORK/out/podman-$who.err" && $as podman run --rm "$IMAGE" true; then
        set -- -n "podman run --rm" "podman run --rm $IMAGE true"
    else
        set --
    fi
    $as hyperfine -N --runs "$RUNS" --warmup 3 --export-json "$WORK/out/start-$who.json" \
        -n "dev run -- true" "$DEV run -- true" \
        -n "bwrap (floor)" "$BWRAP true" "$@"
done

# Joining a running env (`dev start` keeps it up) vs the cold case above, and nsenter into the
# same namespaces as the floor (as root: init is not dumpable, so only root may open them).
"$AS" "$DEV" start 2>/dev/null
INIT=$(python3 -c "import json,glob; print(json.load(open(glob.glob('$WORK/run/dev/*/state.json')[0]))['init']['pid'])")
"$AS" hyperfine -N --runs "$RUNS" --warmup 3 --export-json "$WORK/out/join.json" \
    -n "dev run -- true (joins)" "$DEV run -- true"
hyperfine -N --runs "$RUNS" --warmup 3 --export-json "$WORK/out/nsenter.json" \
    -n "nsenter" "nsenter --user --mount --pid --target $INIT true"
"$AS" "$DEV" stop 2>/dev/null

# The same start with a tools layer (apt: hello) under the env's own layer.
mkdir -p "$WORK/project-tools"
printf 'image = "%s"\n[tools]\npackages = ["hello"]\n' "$IMAGE" > "$WORK/project-tools/dev.toml"
chown -R "$USER_NAME:" "$WORK/project-tools"
"$AS" sh -c "cd $WORK/project-tools && $DEV run -- hello" >/dev/null 2>&1
"$AS" hyperfine -N --runs "$RUNS" --warmup 3 --export-json "$WORK/out/tools.json" \
    -n "without tools" "sh -c 'cd $WORK/project && exec $DEV run -- true'" \
    -n "with tools" "sh -c 'cd $WORK/project-tools && exec $DEV run -- true'"

WORKLOAD='find /usr >/dev/null && tar -cf - /usr | cat >/dev/null'
"$AS" hyperfine --runs 10 --warmup 2 --export-json "$WORK/out/files.json" \
    -n "env x1" "$DEV run -- sh -c '$WORKLOAD'" \
    -n "env x2" "$DEV run -- sh -c '$WORKLOAD; $WORKLOAD'" \
    -n "host x1" "sh -c 'cd $CACHE/rootfs && find usr >/dev/null && tar -cf - usr | cat >/dev/null'"

python3 - "$WORK" "$ROOT/README.md" <<'PY'
import json, re, sys
work = sys.argv[1]
def load(p):
    return {r["command"]: r["median"] for r in json.load(open(p))["results"]}
rows = []
for who, label in (("sub", "with a subordinate range"), ("nosub", "single-id map")):
    s = load(f"{work}/out/start-{who}.json")
    dev, bw = s["dev run -- true"], s["bwrap (floor)"]
    pod = s.get("podman run --rm")
    podcell = f"{pod*1000:.0f} ms ({pod/dev:.1f}x dev)" if pod else "fails: cannot unpack the image without a subordinate range"
    rows.append(f"| {label} | {dev*1000:.1f} ms | {podcell} | {bw*1000:.1f} ms (dev {dev/bw:.2f}x) |")
j = load(f"{work}/out/join.json")["dev run -- true (joins)"]
ns = load(f"{work}/out/nsenter.json")["nsenter"]
cold = load(f"{work}/out/start-sub.json")["dev run -- true"]
t = load(f"{work}/out/tools.json")
without, with_tools = t["without tools"], t["with tools"]
f = load(f"{work}/out/files.json")
x1, x2, host = f["env x1"], f["env x2"], f["host x1"]
lines = [
    "Warm start (image pulled, env created), medians of hyperfine run as the user:",
    "",
    "| user | `dev run -- true` | `podman run --rm IMAGE true` (rootless, runc) | bwrap on the same tree (floor) |",
    "|---|---|---|---|",
    *rows,
    "",
    f"Joining an env that runs (`dev start`): {j*1000:.1f} ms, against {cold*1000:.1f} ms when the env has to start (cold) and {ns*1000:.1f} ms for `nsenter --user --mount --pid` into the same namespaces (the floor, as root): {j/cold:.2f}x cold, {j/ns:.2f}x nsenter.",
    "",
    f"With a tools layer (apt: `hello`) under the env's own layer, a warm `dev run -- true` takes {with_tools*1000:.1f} ms against {without*1000:.1f} ms without: {(with_tools-without)*1000:+.2f} ms.",
    "",
    f"File-heavy work (`find /usr`, then reading every file under /usr through `tar`): a session that does it once takes {x1*1000:.0f} ms, {x1/host:.2f}x the {host*1000:.0f} ms on the same tree on the host (each session mounts a fresh overlay, so its lookups start cold); a second pass in the same session adds {(x2-x1)*1000:.0f} ms, {(x2-x1)/host:.2f}x the host.",
]
text = "\n".join(lines)
print(text)
readme = open(sys.argv[2]).read()
readme = re.sub(r"<!-- bench:start -->.*?<!-- /bench:start -->", "<!-- bench:start -->\n" + text + "\n<!-- /bench:start -->", readme, flags=re.S)
open(sys.argv[2], "w").write(readme)
PY
