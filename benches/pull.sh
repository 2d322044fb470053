#!/bin/sh
# Cold pull of a real Debian image, side by side in one hyperfine run, as the same unprivileged
# user (devtest-sub, which has a subordinate id range): `dev pull` vs rootless `podman pull`
# (native overlay), with `libdeflate-gunzip` and `gzip -dc` of the layer as floors; then the
# first run of that image from an empty store, `dev run --image IMAGE -- true` vs `podman run
# --rm IMAGE true` with a fresh `--root`, in a second hyperfine run. Also peak RSS of `dev pull`.
# Run as root after `./install.sh --dev`. Writes the figures into README.md.
#   DEV_BENCH_CACHE  where the debootstrapped image is kept (default /var/cache/dev-bench)
#   RUNS             hyperfine runs per command (default 5)
#   DEV_BENCH_TRIALS an empty directory for the trials' stores, e.g. on a freshly made file
#                    system: on a shared disk, other users' deletions make ext4's inode
#                    allocator slow for minutes (`recently_deleted`). Made with
#                    `mkfs.ext4 -E lazy_itable_init=0,lazy_journal_init=0`, or its background
#                    zeroing of the inode tables writes during the trials. Left as it is afterwards.
#                    Default: in the work dir, removed at the end.
#   DEV_BENCH_BASELINE another dev binary (e.g. the last commit's), run in the same rounds as
#                    `dev pull (baseline)` and `dev run --image (baseline)`; the README is then
#                    left alone, the figures are only printed.
set -eu
RUNS=${RUNS:-5}
. "$(dirname "$0")/lib.sh"
command -v libdeflate-gunzip >/dev/null || { echo "benches: \`libdeflate-gunzip\` is missing; run ./install.sh --dev" >&2; exit 1; }

TRIALS=${DEV_BENCH_TRIALS:-$WORK/trials}
if [ -n "${DEV_BENCH_TRIALS:-}" ] && [ -n "$(ls -A "$TRIALS" | grep -vx "lost+found")" ]; then
    echo "benches: DEV_BENCH_TRIALS ($TRIALS) is not empty" >&2
    exit 1
fi
chmod 0755 "$TRIALS" 2>/dev/null || mkdir -p "$TRIALS"

# Sanity: both pull the image.
$AS "$WORK/bin/dev" pull -q "$IMAGE" >/dev/null
$AS podman pull -q "$IMAGE" >/dev/null

# 5. One hyperfine run. Each trial pulls into a store (and a podman --root) that never held
#    anything, and nothing is deleted while the trials run: deleting thousands of files right
#    before creating thousands makes ext4's inode allocator skip the recently freed ones for
#    minutes (`recently_deleted` in ext4_create), which would measure the deletion, not the pull.
#    `sync` before each trial, so one trial's writeback is not billed to the next; first, dev's
#    flush in the background (`dev __settle`, which a pull starts and which waits 300 ms) ends,
#    or it would fall on the next trial, podman's.
#    Then 1 GiB of memory is touched and freed, right before every trial of every command:
#    a VM with free page reporting (virtio-balloon's REPORTING feature: see
#    /sys/bus/virtio/devices/*/features, bit 5) hands freed memory back to its host, which
#    backs it again at its next first touch. Without this, each trial paid for the memory the
#    one before it freed (podman's most): `dev run --image` right after a `podman run --rm`
#    took 0.65-0.81 s with 2.5x the kernel time in page-cache writes, against 0.57-0.68 s
#    when it followed a warm-up. Every trial, podman's and the floors' too, starts alike.
cat > "$WORK/warm-memory" <<'SH'
#!/bin/sh
python3 -c 'b = bytearray(b"\x01") * (1 << 30)'
SH
cat > "$WORK/next-trial" <<SH
#!/bin/sh
while pgrep -f -- " __settle " >/dev/null; do sleep 0.05; done
n=\$(( \$(cat $WORK/trial-n 2>/dev/null || echo 0) + 1 ))
echo \$n > $WORK/trial-n
mkdir -p $TRIALS/\$n/run && chown -R $USER_NAME: $TRIALS/\$n && chmod 0700 $TRIALS/\$n/run
sync
$WORK/warm-memory
SH
cat > "$WORK/trial-dir" <<SH
#!/bin/sh
echo $TRIALS/\$(cat $WORK/trial-n)
SH
chmod 0755 "$WORK/next-trial" "$WORK/trial-dir" "$WORK/warm-memory"
DEV_PULL="$AS env XDG_DATA_HOME=\$($WORK/trial-dir) $WORK/bin/dev pull -q $IMAGE"
POD_PULL="$AS podman --root \$($WORK/trial-dir)/podman --runroot \$($WORK/trial-dir)/podman-run pull -q $IMAGE"
#    In $RUNS rounds of one run of each command, so that the machine's drift (a deletion of
#    thousands of files elsewhere slows ext4 for minutes) falls on every command alike; the
#    summary takes each command's median over the rounds.
BASE=${DEV_BENCH_BASELINE:-}
if [ -n "$BASE" ]; then
    install -m 0755 "$BASE" "$WORK/bin/dev-baseline"
    BASE_PULL="$AS env XDG_DATA_HOME=\$($WORK/trial-dir) $WORK/bin/dev-baseline pull -q $IMAGE"
    set -- --prepare "$WORK/next-trial" -n "dev pull (baseline)" "$BASE_PULL"
else
    set --
fi
mkdir -p "$WORK/out"
for r in $(seq "$RUNS"); do
    hyperfine --runs 1 --export-json "$WORK/out/pull-$r.json" \
        --prepare "$WORK/next-trial" -n "dev pull" "$DEV_PULL" "$@" \
        --prepare "$WORK/next-trial" -n "podman pull" "$POD_PULL" \
        --prepare "sync; $WORK/warm-memory" -n "libdeflate-gunzip (floor)" "libdeflate-gunzip -c $CACHE/layer.tar.gz > /dev/null" \
        --prepare "sync; $WORK/warm-memory" -n "gzip -dc (floor)" "gzip -dc $CACHE/layer.tar.gz > /dev/null"
done

# 6. First run of the image from an empty store (and a runtime dir of the trial's own, so no
#    env of an earlier trial is found running): dev pulls, probes the overlay backend, creates
#    the env and runs `true`; podman pulls into a fresh --root and runs it with runc.
DEV_RUN="$AS env XDG_DATA_HOME=\$($WORK/trial-dir) XDG_RUNTIME_DIR=\$($WORK/trial-dir)/run $WORK/bin/dev run --image $IMAGE -- true"
POD_RUN="$AS podman --root \$($WORK/trial-dir)/podman --runroot \$($WORK/trial-dir)/podman-run run --rm $IMAGE true"
"$WORK/next-trial"
$AS env XDG_DATA_HOME="$("$WORK/trial-dir")" XDG_RUNTIME_DIR="$("$WORK/trial-dir")/run" "$WORK/bin/dev" run --image "$IMAGE" -- true
if [ -n "$BASE" ]; then
    set -- --prepare "$WORK/next-trial" -n "dev run --image (baseline)" "$(echo "$DEV_RUN" | sed 's|/bin/dev run|/bin/dev-baseline run|')"
fi
for r in $(seq "$RUNS"); do
    hyperfine --runs 1 --export-json "$WORK/out/first-$r.json" \
        --prepare "$WORK/next-trial" -n "dev run --image" "$DEV_RUN" "$@" \
        --prepare "$WORK/next-trial" -n "podman run --rm" "$POD_RUN"
done

# 7. Peak RSS of a cold dev pull (dev and its helper processes), into a fresh store too.
"$WORK/next-trial"
RSS_KB=$(/usr/bin/time -f %M "$AS" env XDG_DATA_HOME="$("$WORK/trial-dir")" "$WORK/bin/dev" pull -q "$IMAGE" 2>&1 >/dev/null | tail -n 1)

# 8. Ratios, printed and written into README.md.
python3 - "$WORK/out" "$RUNS" "$RSS_KB" "$(stat -c %s "$CACHE/layer.tar.gz")" "$(stat -c %s "$CACHE/layer.tar")" "$ROOT/README.md" <<'PY'
import json, re, sys
import statistics
def medians(kind):
    times = {}
    for r in range(1, int(sys.argv[2]) + 1):
        for res in json.load(open(f"{sys.argv[1]}/{kind}-{r}.json"))["results"]:
            times.setdefault(res["command"], []).extend(res["times"])
    return {k: statistics.median(v) for k, v in times.items()}
res, first = medians("pull"), medians("first")
rss_mib = int(sys.argv[3]) / 1024
gz, raw = int(sys.argv[4]) / 1e6, int(sys.argv[5]) / 1e6
dev, pod, lib, floor = (res[k] for k in ("dev pull", "podman pull", "libdeflate-gunzip (floor)", "gzip -dc (floor)"))
frun, fpod = first["dev run --image"], first["podman run --rm"]
lines = [
    f"Image: Debian bookworm minbase (debootstrap), one layer, {gz:.1f} MB gzip / {raw:.1f} MB tar. Medians of {sys.argv[2]} rounds that alternate the commands; each trial pulls into a store (and a `podman --root`) that never held anything, nothing is deleted while the trials run (a deletion right before makes ext4 slow for minutes and would be measured instead), and every trial follows the same warm-up of 1 GiB of memory touched and freed (this VM hands freed memory back to its host, which backs it again at the next touch: without it, a trial paid for the memory the one before it freed):",
    "",
    "| command | median | ratio |",
    "|---|---|---|",
    f"| `dev pull` | {dev*1000:.0f} ms | 1.00 |",
    f"| `podman pull` (rootless, native overlay) | {pod*1000:.0f} ms | {pod/dev:.2f}x dev |",
    f"| `libdeflate-gunzip` of the layer (floor) | {lib*1000:.0f} ms | dev is {dev/lib:.2f}x the floor |",
    f"| `gzip -dc` of the layer | {floor*1000:.0f} ms | dev is {dev/floor:.2f}x |",
    "",
    f"`dev pull` is **{pod/dev:.1f}x faster** than `podman pull` and **{dev/lib:.2f}x** the `libdeflate-gunzip` floor; peak RSS {rss_mib:.1f} MiB.",
    "",
    f"First run of the image from an empty store (rounds of their own): `dev run --image IMAGE -- true` {frun*1000:.0f} ms, `podman run --rm IMAGE true` with a fresh `--root` {fpod*1000:.0f} ms: dev is **{fpod/frun:.1f}x faster**.",
]
text = "\n".join(lines)
print(text)
if "dev pull (baseline)" in res:
    bp, br = res["dev pull (baseline)"], first["dev run --image (baseline)"]
    print(f"\nbaseline: dev pull {bp*1000:.0f} ms (this dev is {dev/bp:.2f}x of it), first run {br*1000:.0f} ms ({frun/br:.2f}x); README left alone")
    sys.exit(0)
readme = open(sys.argv[6]).read()
readme = re.sub(r"<!-- bench:pull -->.*?<!-- /bench:pull -->", "<!-- bench:pull -->\n" + text + "\n<!-- /bench:pull -->", readme, flags=re.S)
open(sys.argv[6], "w").write(readme)
PY
