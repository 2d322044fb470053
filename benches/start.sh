#!/bin/sh
# Warm start of an env, side by side in hyperfine runs as each user, image pulled and env
# created beforehand, each run once the env of the run before has stopped: `dev run -- true` vs
# `podman run --rm IMAGE true` vs bwrap on the same tree (the floor); then back to back. hyperfine itself runs as the unprivileged user, so no wrapper is timed.
# Twice: as devtest-sub (subordinate range: dev runs newuidmap/newgidmap) and as devtest-nosub
# (a single-id map, as bwrap uses). The starts run with `linger = 0` (each run starts the env);
# then back-to-back runs that join the env lingering from the run before, beside bwrap and the
# floors, and nsenter into the same namespaces; a tools layer; a file-heavy workload (find /usr
# and read every file under /usr) in the env, on the host and on a bare overlay of the same
# tree, and what that overlay adds per file operation (ops.py); a build of a generated C project
# (`make -j2`) in the env's project directory against the same build on the host; the start
# without the user-namespace holder; and the start on a terminal (the command's own pty).
# Run as root after `./install.sh --dev`. Writes the figures into README.md.
#   DEV_BENCH_CACHE  where the debootstrapped image is kept (default /var/cache/dev-bench)
#   RUNS             hyperfine runs per command (default 40; the workload runs 32)
#   ROUNDS           rounds the runs are split into (default 4), see hf below
#   DEV_BASELINE     another build of dev to time on a terminal beside this one (optional)
set -eu
RUNS=${RUNS:-40}
ROUNDS=${ROUNDS:-4}
. "$(dirname "$0")/lib.sh"

# hyperfine run by `$1` (a runner such as "$AS"; `env` for root) in $ROUNDS rounds of `$2` runs
# per command, round N written to $WORK/out/$3-N.json. The summary takes each command's median
# over all its rounds: the machine's drift during a benchmark falls on every command alike.
hf() {
    runner=$1 runs=$2 name=$3
    shift 3
    for r in $(seq "$ROUNDS"); do
        $runner hyperfine -N --runs "$runs" --warmup 2 --export-json "$WORK/out/$name-$r.json" "$@"
    done
}
PER=$(( (RUNS + ROUNDS - 1) / ROUNDS ))

DEV="$WORK/bin/dev"
BWRAP="bwrap --unshare-user --unshare-pid --bind $CACHE/rootfs / --proc /proc --dev /dev"
UNSHARE="unshare --map-auto --map-root-user --mount --pid --fork /usr/sbin/chroot $CACHE/rootfs"

# The same set-up for the user without a range: own store, own podman storage.
# Its own project too: dev refuses a dev.toml another user owns.
sed "s/$USER_NAME/devtest-nosub/g; s|$WORK/home|$WORK/home-nosub|g; s|$WORK/run|$WORK/run-nosub|g; s|cd $WORK/project\$|cd $WORK/project-nosub|" \
    "$AS" > "$WORK/as-nosub"
mkdir -p "$WORK/project-nosub"
cp "$WORK/project/dev.toml" "$WORK/project-nosub/"
chown -R devtest-nosub: "$WORK/project-nosub"
chmod 0755 "$WORK/as-nosub"
mkdir -p "$WORK/run-nosub"
cp -a "$WORK/home" "$WORK/home-nosub"
rm -rf "$WORK/home-nosub/data" "$WORK/home-nosub/podman-storage"
sed -i "s|$WORK/home|$WORK/home-nosub|g; s|$WORK/run|$WORK/run-nosub|g" "$WORK/home-nosub/.config/containers/storage.conf"
chown -R devtest-nosub: "$WORK/home-nosub" "$WORK/run-nosub"
chmod 0700 "$WORK/run-nosub"
chmod 0777 "$WORK/project"
mkdir -p "$WORK/out" && chmod 0777 "$WORK/out"
# Every start below starts the env: no env lingers from the run before (see the back-to-back
# runs further down).
linger() {
    for h in "$WORK/home" "$WORK/home-nosub"; do
        mkdir -p "$h/.config/dev"
        printf 'linger = %s\n' "$1" > "$h/.config/dev/config.toml"
    done
    chown -R "$USER_NAME:" "$WORK/home/.config"
    chown -R devtest-nosub: "$WORK/home-nosub/.config"
}
linger 0

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
    # The fair floor with the same id maps: unshare maps the subordinate range through
    # newuidmap/newgidmap as dev does (bwrap maps one id); only where there is a range.
    if [ "$who" = sub ]; then
        set -- "$@" -n "unshare (floor, same maps)" "$UNSHARE true"
    fi
    # Each timed run starts once the env the run before started has stopped: the prepare step
    # (run before every command's runs alike, untimed) waits for the env's lock, which its
    # keeper holds until the env's overlay is unmounted. Without it, a start waits for the
    # last one's stop in a third to a half of the runs (see `restart` below).
    home="$WORK/home"; [ "$who" = nosub ] && home="$WORK/home-nosub"
    lock=$(ls "$home"/data/dev/envs-v1/*/*/lock | head -n 1)
    hf "$as" "$PER" "start-$who" --prepare "flock $lock true" \
        -n "dev run -- true" "$DEV run -- true" \
        -n "bwrap (floor)" "$BWRAP true" "$@"
done
# The same starts back to back, each right after the one before ended (its env still stopping).
hf "$AS" "$PER" restart \
    -n "dev run -- true" "$DEV run -- true" \
    -n "unshare (floor, same maps)" "$UNSHARE true"

# Each start above joins the user namespace the holder keeps (`dev __userns-hold`, left by the
# warm-up run). Without it (`userns-linger = 0`: newuidmap and newgidmap map each start's own,
# as for the first start after the holder's idle time), beside the start that joins it; both
# through `env`, which names the config directory.
mkdir -p "$WORK/config-nohold/dev"
printf 'linger = 0\nuserns-linger = 0\n' > "$WORK/config-nohold/dev/config.toml"
chown -R "$USER_NAME:" "$WORK/config-nohold"
hf "$AS" "$PER" holder \
    -n "with the holder" "env XDG_CONFIG_HOME=$WORK/home/.config $DEV run -- true" \
    -n "without" "env XDG_CONFIG_HOME=$WORK/config-nohold $DEV run -- true"

# On a terminal: the command gets a pty of the env's own, which dev relays (without one, a session
# of its own). The terminal is a pty whose other side a process of the user's holds and reads
# until this script ends; a shell gives the command the pty as stdin and stdout, and the same
# shell starts it without one beside. When DEV_BASELINE names another build of dev (the commit
# before the relay, say), that build runs beside this one in the same hyperfine runs; the rounds
# alternate them. In a throwaway env (`--rm`: init starts the command, dev relays the pty init
# sends it) and in the project's env (the session joins it and starts the command itself).
"$AS" python3 -c 'import os, pty, select, sys
m, s = pty.openpty()
print(os.ttyname(s), flush=True)
sys.stdout.close()
parent = os.getppid()
while os.getppid() == parent:
    if select.select([m], [], [], 1)[0]:
        os.read(m, 65536)' > "$WORK/pts" &
PTY_HOLDER=$!
until [ -s "$WORK/pts" ]; do sleep 0.1; done
PTS=$(cat "$WORK/pts")
if [ -n "${DEV_BASELINE:-}" ]; then install -m 0755 "$DEV_BASELINE" "$WORK/bin/dev-baseline"; fi
for how in "run --rm --" "run --"; do
    set --
    for build in "$DEV" ${DEV_BASELINE:+"$WORK/bin/dev-baseline"}; do
        label=dev; [ "$build" = "$DEV" ] || label=baseline
        set -- "$@" -n "$label $how true" "sh -c 'exec $build $how true'" \
            -n "$label $how true, on a terminal" "sh -c 'exec $build $how true <$PTS >$PTS'"
    done
    hf "$AS" "$PER" "pty-$(echo "$how" | tr -dc a-z)" "$@"
done
kill "$PTY_HOLDER"

# Back to back: each `dev run` joins the env the run before left lingering (`linger = 5`, the
# default), beside bwrap and the same-maps floor in the same rounds; and nsenter into the same
# namespaces as the floor of a join (as root: init is not dumpable, so only root may open them).
linger 5
"$AS" "$DEV" run -- true 2>/dev/null
# (Four times the runs of the starts: each takes a few ms, and a loaded machine's noise is as large.)
hf "$AS" $((PER * 4)) b2b \
    -n "dev run -- true (back to back)" "$DEV run -- true" \
    -n "bwrap (floor)" "$BWRAP true" \
    -n "unshare (floor, same maps)" "$UNSHARE true"
"$AS" "$DEV" start 2>/dev/null
INIT=$(python3 -c "import json,glob; print(json.load(open(glob.glob('$WORK/run/dev/*/state.json')[0]))['init']['pid'])")
for r in $(seq "$ROUNDS"); do
    hyperfine -N --runs $((PER * 4)) --warmup 2 --export-json "$WORK/out/nsenter-$r.json" \
        -n "nsenter" "nsenter --user --mount --pid --target $INIT true"
done
"$AS" "$DEV" stop 2>/dev/null
linger 0

# The same start with a tools layer (apt: hello) under the env's own layer.
mkdir -p "$WORK/project-tools"
printf 'image = "%s"\n[tools]\npackages = ["hello"]\n' "$IMAGE" > "$WORK/project-tools/dev.toml"
chown -R "$USER_NAME:" "$WORK/project-tools"
"$AS" sh -c "cd $WORK/project-tools && $DEV run -- hello" >/dev/null 2>&1
hf "$AS" "$PER" tools \
    -n "without tools" "sh -c 'cd $WORK/project && exec $DEV run -- true'" \
    -n "with tools" "sh -c 'cd $WORK/project-tools && exec $DEV run -- true'"

# The same start from a devcontainer.json (JSONC, as real ones are written) as from the dev.toml
# it amounts to: two projects, each with its env, side by side in the same rounds.
mkdir -p "$WORK/project-devc/.devcontainer" "$WORK/project-toml"
printf '// the same image as the dev.toml beside it\n{\n  "image": "%s", /* pinned by dev.lock */\n}\n' "$IMAGE" \
    > "$WORK/project-devc/.devcontainer/devcontainer.json"
printf 'image = "%s"\n' "$IMAGE" > "$WORK/project-toml/dev.toml"
chown -R "$USER_NAME:" "$WORK/project-devc" "$WORK/project-toml"
for p in devc toml; do "$AS" sh -c "cd $WORK/project-$p && $DEV run -- true" >/dev/null 2>&1; done
hf "$AS" "$PER" devcontainer \
    -n "dev.toml" "sh -c 'cd $WORK/project-toml && exec $DEV run -- true'" \
    -n "devcontainer.json" "sh -c 'cd $WORK/project-devc && exec $DEV run -- true'"

# File-heavy work, all on the same tree: the env (started by the session, and running, which
# keeps its overlay mounted between sessions), the host, and a bare overlay of that tree
# mounted once by root (the floor: what overlayfs itself costs).
WORKLOAD='find usr >/dev/null && tar -cf - usr | cat >/dev/null'
mkdir -p "$WORK/ovl/upper" "$WORK/ovl/work" "$WORK/ovl/merged"
mount -t overlay overlay -o "lowerdir=$CACHE/rootfs,upperdir=$WORK/ovl/upper,workdir=$WORK/ovl/work" "$WORK/ovl/merged"
mkdir -p "$WORK/project-running"
cp "$WORK/project/dev.toml" "$WORK/project/dev.lock" "$WORK/project-running/"
chown -R "$USER_NAME:" "$WORK/project-running"
"$AS" sh -c "cd $WORK/project-running && $DEV start" 2>/dev/null
hf "$AS" 8 files \
    -n "env started by the session" "$DEV run -- sh -c 'cd / && $WORKLOAD'" \
    -n "env running" "sh -c 'cd $WORK/project-running && exec $DEV run -- sh -c \"cd / && $WORKLOAD\"'" \
    -n "host" "sh -c 'cd $CACHE/rootfs && $WORKLOAD'" \
    -n "bare overlay" "sh -c 'cd $WORK/ovl/merged && $WORKLOAD'"
"$AS" sh -c "cd $WORK/project-running && $DEV stop" 2>/dev/null
# What overlayfs adds per file operation, host tree against the bare overlay.
python3 "$ROOT/benches/ops.py" "$CACHE/rootfs" "$WORK/ovl/merged" > "$WORK/out/ops.json"
umount "$WORK/ovl/merged"

# A build in the project directory (a bind mount of the host's): a generated C project of
# $BUILD_FILES files, `make -j2`, $BUILD_ROUNDS rounds (default 2) of 3 runs each, in the env (running: `dev start`; gcc and make from a tools
# layer, the same Debian packages as the host's) against the same tree built on the host, in
# the same rounds, `make clean` before each run.
BUILD_FILES=${BUILD_FILES:-60}
B="$WORK/project-build"
mkdir -p "$B/src"
python3 - "$B" "$BUILD_FILES" <<'GEN'
import sys
root, n = sys.argv[1], int(sys.argv[2])
with open(f"{root}/src/common.h", "w") as h:
    h.write("#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n")
    h.write("".join(f"int unit{i}(int);\n" for i in range(n)))
for i in range(n):
    with open(f"{root}/src/unit{i}.c", "w") as c:
        c.write('#include "common.h"\n')
        c.write("struct item { int key; char name[32]; double weight; };\n")
        c.write(f"static int cmp(const void *a, const void *b) {{ return ((const struct item *)a)->key - ((const struct item *)b)->key; }}\n")
        for j in range(4):
            c.write(f"static int step{j}(int x) {{ struct item v[16]; for (int k = 0; k < 16; k++) {{ v[k].key = (x * {j + 3} + k * {i + 7}) % 97; snprintf(v[k].name, sizeof v[k].name, \"u{i}-%d\", k); v[k].weight = k * 0.5 + x; }} qsort(v, 16, sizeof v[0], cmp); return v[{j}].key + (int)strlen(v[3].name); }}\n")
        c.write(f"int unit{i}(int x) {{ return " + " + ".join(f"step{j}(x + {j})" for j in range(4)) + "; }\n")
with open(f"{root}/src/main.c", "w") as c:
    c.write('#include "common.h"\nint main(void) { long t = 0;\n')
    c.write("".join(f"t += unit{i}({i});\n" for i in range(n)))
    c.write('printf("%ld\\n", t); return 0; }\n')
with open(f"{root}/Makefile", "w") as m:
    m.write("CFLAGS = -O2 -g -Wall\nSRC = $(wildcard src/*.c)\nOBJ = $(SRC:src/%.c=obj/%.o)\n")
    m.write("app: $(OBJ)\n\t$(CC) -o $@ $^\nobj/%.o: src/%.c src/common.h | obj\n\t$(CC) $(CFLAGS) -c -o $@ $<\nobj:\n\tmkdir -p obj\nclean:\n\trm -rf obj app\n.PHONY: clean\n")
GEN
printf 'image = "%s"\n[tools]\npackages = ["gcc", "make", "libc6-dev"]\n' "$IMAGE" > "$B/dev.toml"
chown -R "$USER_NAME:" "$B"
"$AS" sh -c "cd $B && $DEV start" >/dev/null 2>&1
"$AS" sh -c "cd $B && $DEV run -- sh -c 'make -s -j2 && ./app && make -s clean'" >/dev/null
for r in $(seq "${BUILD_ROUNDS:-2}"); do
    "$AS" hyperfine -N --runs 3 --warmup 1 --export-json "$WORK/out/build-$r.json" \
        -n "make -j2 in the env" --prepare "make -s -C $B clean" "sh -c 'cd $B && exec $DEV run -- make -s -j2'" \
        -n "make -j2 on the host" --prepare "make -s -C $B clean" "make -s -C $B -j2"
done
"$AS" sh -c "cd $B && $DEV stop" >/dev/null 2>&1

python3 - "$WORK" "$ROOT/README.md" "$CACHE/rootfs" "$WORK/ovl/merged" <<'PY'
import glob, json, re, statistics, sys
work = sys.argv[1]
def load(name, stat=statistics.median):
    """Each command's median (or `stat`) over every round of benchmark `name`."""
    times = {}
    for p in glob.glob(f"{work}/out/{name}-*.json"):
        for r in json.load(open(p))["results"]:
            times.setdefault(r["command"], []).extend(r["times"])
    return {c: stat(t) for c, t in times.items()}
rows = []
for who, label in (("sub", "with a subordinate range"), ("nosub", "single-id map")):
    s = load(f"start-{who}")
    dev, bw = s["dev run -- true"], s["bwrap (floor)"]
    pod = s.get("podman run --rm")
    podcell = f"{pod*1000:.0f} ms ({pod/dev:.1f}x dev)" if pod else "fails: cannot unpack the image without a subordinate range"
    un = s.get("unshare (floor, same maps)")
    uncell = f"{un*1000:.1f} ms (dev {dev/un:.2f}x)" if un else "— (needs a range)"
    rows.append(f"| {label} | {dev*1000:.1f} ms | {podcell} | {bw*1000:.1f} ms (dev {dev/bw:.2f}x) | {uncell} |")
b = load("b2b")
j, jbw, jun = b["dev run -- true (back to back)"], b["bwrap (floor)"], b["unshare (floor, same maps)"]
ns = load("nsenter")["nsenter"]
cold = load("start-sub")["dev run -- true"]
bm = load("build")
bin_env, bin_host = bm["make -j2 in the env"], bm["make -j2 on the host"]
# Each round's ratio too: the build's medians drift with the machine's load between rounds.
def rounds(name, a, b):
    out = []
    for p in sorted(glob.glob(f"{work}/out/{name}-*.json")):
        r = {x["command"]: statistics.median(x["times"]) for x in json.load(open(p))["results"]}
        out.append(r[a] / r[b])
    return out
build_rounds = rounds("build", "make -j2 in the env", "make -j2 on the host")
start_rounds = rounds("start-sub", "dev run -- true", "unshare (floor, same maps)")
start_bw_rounds = rounds("start-sub", "dev run -- true", "bwrap (floor)")
restart = load("restart")
restart_rounds = rounds("restart", "dev run -- true", "unshare (floor, same maps)")
hold = load("holder")
hold_rounds = rounds("holder", "without", "with the holder")
t = load("tools")
without, with_tools = t["without tools"], t["with tools"]
dc = load("devcontainer")
dc_toml, dc_json = dc["dev.toml"], dc["devcontainer.json"]
f = load("files")
fresh, running, host, bare = f["env started by the session"], f["env running"], f["host"], f["bare overlay"]
# The fastest run of each: noise only adds time, and it is large here (the host's own runs fall
# into two groups some 30% apart, which moves its median from one benchmark run to the next).
fm = load("files", min)
lines = [
    "Warm start (image pulled, env created and stopped), medians of hyperfine run as the user (in rounds that alternate the commands; each run once the env the run before started has stopped):",
    "",
    "| user | `dev run -- true` | `podman run --rm IMAGE true` (rootless, runc) | bwrap on the same tree (floor, one id) | `unshare --map-auto … chroot` (floor, same maps) |",
    "|---|---|---|---|---|",
    *rows,
    "",
    f"Each round's ratio of `dev run -- true` (with a subordinate range) to the same-maps floor: {', '.join(f'{x:.2f}x' for x in start_rounds)}; to bwrap: {', '.join(f'{x:.2f}x' for x in start_bw_rounds)}.",
    "",
    f"Back to back, each start right after the one before ended (with `linger = 0` that env is still stopping, and a start waits for its lock in a third to a half of the runs): {restart['dev run -- true']*1000:.1f} ms against {restart['unshare (floor, same maps)']*1000:.1f} ms for the same-maps floor ({restart['dev run -- true']/restart['unshare (floor, same maps)']:.2f}x; per round: {', '.join(f'{x:.2f}x' for x in restart_rounds)}).",
    "",
    f"With a subordinate range, those starts join the user namespace a holder keeps (`dev __userns-hold`, left by the first start, gone after `userns-linger`, 10 minutes by default, unused; podman keeps its pause process so) and map the env's own beneath it themselves. Without the holder (`userns-linger = 0`, or the first start after its time), newuidmap and newgidmap map each start's namespace: {hold['without']*1000:.1f} ms against {hold['with the holder']*1000:.1f} ms with it, both started through `env` ({hold['without']/hold['with the holder']:.2f}x; per round: {', '.join(f'{x:.2f}x' for x in hold_rounds)}).",
    "",
    f"Back to back (`dev run -- true` again and again; each run joins the env the one before left lingering): {j*1000:.1f} ms, against {jbw*1000:.1f} ms for bwrap ({j/jbw:.2f}x bwrap) and {jun*1000:.1f} ms for the same-maps floor ({j/jun:.2f}x) in the same rounds, {cold*1000:.1f} ms when the env has to start, and {ns*1000:.1f} ms for `nsenter --user --mount --pid` into the same namespaces (the floor of a join, as root; {j/ns:.2f}x).",
    "",
    f"A build in the project directory (a generated C project of {len(glob.glob(work + '/project-build/src/*.c'))} files, `make -j2`, gcc and make from a tools layer of the same Debian packages as the host's), in the running env {bin_env:.2f} s against {bin_host:.2f} s on the host: {bin_env/bin_host:.3f}x (per round: {', '.join(f'{x:.3f}x' for x in build_rounds)}).",
    "",
    f"With a tools layer (apt: `hello`) under the env's own layer, a warm `dev run -- true` takes {with_tools*1000:.1f} ms against {without*1000:.1f} ms without: {(with_tools-without)*1000:+.2f} ms.",
    "",
    f"From a devcontainer.json (JSONC) instead of the dev.toml it amounts to, a warm `dev run -- true` takes {dc_json*1000:.1f} ms against {dc_toml*1000:.1f} ms: {(dc_json-dc_toml)*1000:+.2f} ms.",
    "",
    f"File-heavy work (`find /usr`, then reading every file under /usr through `tar`), on the same tree: in a running env (`dev start`; the session joins it) {running*1000:.0f} ms, {running/host:.2f}x the {host*1000:.0f} ms on the host. overlayfs alone, a bare overlay of that tree mounted once by root, takes {bare*1000:.0f} ms ({bare/host:.2f}x the host): the env is {running/bare:.2f}x the bare overlay. A session that has to start the env takes {fresh*1000:.0f} ms ({fresh/host:.2f}x the host): its overlay is mounted afresh, so every lookup is a first one.",
    "",
    f"The fastest of each one's {load('files', len)['host']} runs, which noise cannot make faster (the medians above move by up to 15% between benchmark runs, the host's most): host {fm['host']*1000:.0f} ms, env running {fm['env running']*1000:.0f} ms ({fm['env running']/fm['host']:.2f}x the host), bare overlay {fm['bare overlay']*1000:.0f} ms ({fm['bare overlay']/fm['host']:.2f}x the host; the env is {fm['env running']/fm['bare overlay']:.2f}x it).",
]
for how, label in (("run --rm --", "a throwaway env (`--rm`)"), ("run --", "the project's env")):
    p = load(f"pty-{how.replace(' ', '').replace('-', '')}")
    plain, tty = p[f"dev {how} true"], p[f"dev {how} true, on a terminal"]
    line = f"On a terminal (a pty the user holds), in {label}: {tty*1000:.1f} ms against {plain*1000:.1f} ms without one"
    if f"baseline {how} true, on a terminal" in p:
        base = p[f"baseline {how} true, on a terminal"]
        line += f"; the build before the pty relay takes {base*1000:.1f} ms on a terminal, so the command's own pty costs {(tty-base)*1000:+.2f} ms"
    lines += ["", line + "."]
ops = json.load(open(f"{work}/out/ops.json"))
h, o = ops[sys.argv[3]], ops[sys.argv[4]]
added = {op: o[op] - h[op] for op in h}
share = (added["stat"] + added["read"]) * ops["files"] / 1000 / (fm["host"] * 1000)
lines += [
    "",
    f"Where the overlay's cost comes from, per file under /usr (best of 15 passes over its {ops['files']} files, `benches/ops.py`): a bare overlay adds {added['stat']:.1f} µs to a stat ({o['stat']/h['stat']:.2f}x the host), {added['open']:.1f} µs to an open and close ({o['open']/h['open']:.2f}x) and {added['read']:.1f} µs to reading a whole file ({o['read']/h['read']:.2f}x). tar stats and reads every file: that alone comes to {(added['stat'] + added['read']) * ops['files'] / 1000:.0f} ms more than on the host, {share:.0%} of the host's fastest run of the whole workload, before find's lookups." + (" Within 10% of the host is out of reach of any overlayfs on this kernel, dev's or not." if share > 0.10 else ""),
]
text = "\n".join(lines)
print(text)
readme = open(sys.argv[2]).read()
readme = re.sub(r"<!-- bench:start -->.*?<!-- /bench:start -->", "<!-- bench:start -->\n" + text + "\n<!-- /bench:start -->", readme, flags=re.S)
open(sys.argv[2], "w").write(readme)
PY
