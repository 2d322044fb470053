#!/bin/sh
# Warm start of an env, side by side in one hyperfine run, as the same unprivileged user
# (devtest-sub, with a subordinate id range), image pulled and env created beforehand:
# `dev run -- true` vs `podman run --rm IMAGE true` vs bwrap on the same tree (the floor).
# Then a file-heavy workload (find /usr, and read every file under /usr) inside the env vs the
# same tree on the host. Run as root after `./install.sh --dev`. Writes the figures into README.md.
#   DEV_BENCH_CACHE  where the debootstrapped image is kept (default /var/cache/dev-bench)
#   RUNS             hyperfine runs per command (default 30; the workload runs 10)
set -eu
RUNS=${RUNS:-30}
. "$(dirname "$0")/lib.sh"

DEV="$WORK/bin/dev"
# Warm: image pulled and env created for both tools; the overlay probe done.
$AS "$DEV" run -- true
$AS podman pull -q "$IMAGE" >/dev/null
$AS podman run --rm "$IMAGE" true
BWRAP="bwrap --unshare-user --unshare-pid --bind $CACHE/rootfs / --proc /proc --dev /dev"
$AS $BWRAP true

hyperfine -N --runs "$RUNS" --warmup 3 --export-json "$WORK/start.json" \
    -n "dev run -- true" "$AS $DEV run -- true" \
    -n "podman run --rm" "$AS podman run --rm $IMAGE true" \
    -n "bwrap (floor)" "$AS $BWRAP true"

WORKLOAD='find /usr >/dev/null && tar -cf - /usr 2>/dev/null | cat >/dev/null'
hyperfine --runs 10 --warmup 2 --export-json "$WORK/files.json" \
    -n "dev: find + read /usr" "$AS $DEV run -- sh -c '$WORKLOAD'" \
    -n "host: find + read /usr" "$AS sh -c 'cd $CACHE/rootfs && find usr >/dev/null && tar -cf - usr | cat >/dev/null'"

python3 - "$WORK/start.json" "$WORK/files.json" "$ROOT/README.md" <<'PY'
import json, re, sys
def load(p):
    return {r["command"]: r["median"] for r in json.load(open(p))["results"]}
s, f = load(sys.argv[1]), load(sys.argv[2])
dev, pod, bw = s["dev run -- true"], s["podman run --rm"], s["bwrap (floor)"]
fd, fh = f["dev: find + read /usr"], f["host: find + read /usr"]
lines = [
    "Warm start, same user, image pulled and env created; medians of one hyperfine run:",
    "",
    "| command | median | ratio |",
    "|---|---|---|",
    f"| `dev run -- true` | {dev*1000:.1f} ms | 1.00 |",
    f"| `podman run --rm IMAGE true` (rootless, runc) | {pod*1000:.1f} ms | {pod/dev:.1f}x dev |",
    f"| `bwrap --unshare-user --unshare-pid` on the same tree (floor) | {bw*1000:.1f} ms | dev is {dev/bw:.2f}x the floor |",
    "",
    f"File-heavy work (`find /usr` and reading every file under /usr): {fd*1000:.0f} ms in the env (native overlay) vs {fh*1000:.0f} ms on the same tree on the host: {fd/fh:.2f}x.",
]
text = "\n".join(lines)
print(text)
readme = open(sys.argv[3]).read()
readme = re.sub(r"<!-- bench:start -->.*?<!-- /bench:start -->", "<!-- bench:start -->\n" + text + "\n<!-- /bench:start -->", readme, flags=re.S)
open(sys.argv[3], "w").write(readme)
PY
