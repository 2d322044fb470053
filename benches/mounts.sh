#!/bin/sh
# What mounts cost at a start: `dev run -- true` in the project's env, stopped before each
# run (`dev stop`, not timed) so that every run starts it, with no mount, with one bind, and
# with eight, each target three directories deep (made in the env's layer by the warm-up; dev
# walks them from the env's root with no symlink followed and mounts onto the descriptor it
# found). Then the same with `--rm` (a throwaway layer: the mount points are made each time,
# and removed with it). As devtest-sub.
# Run as root after `./install.sh --dev`. Prints hyperfine's table.
#   RUNS   hyperfine runs per command (default 30)
#   EXPORT where hyperfine writes its JSON (optional; the user must be able to write it)
set -eu
RUNS=${RUNS:-30}
. "$(dirname "$0")/lib.sh"
DEV="$WORK/bin/dev"
mkdir -p "$WORK/src"
chown "$USER_NAME:" "$WORK/src"
one="-v $WORK/src:/mnt/b0/c/d"
eight=""
for i in 0 1 2 3 4 5 6 7; do eight="$eight -v $WORK/src:/mnt/b$i/c/d"; done
# Warm: the image pulled, the overlay probed, the env's mount points made.
"$AS" "$DEV" run $eight -- true 2>/dev/null
"$AS" hyperfine -N --runs "$RUNS" --warmup 3 --prepare "sh -c '$DEV stop >/dev/null 2>&1 || true'" ${EXPORT:+--export-json "$EXPORT"} \
    "$DEV run -- true" "$DEV run $one -- true" "$DEV run $eight -- true"
"$AS" hyperfine -N --runs "$RUNS" --warmup 3 ${EXPORT:+--export-json "$EXPORT.rm"} \
    "$DEV run --rm -- true" "$DEV run --rm $one -- true" "$DEV run --rm $eight -- true"
