#!/bin/sh
# The GPU inside an env against the host, on a machine with an NVIDIA GPU and its driver:
# `nvidia-smi` and a CUDA device query (the driver API through libcuda.so.1: device count, name,
# memory, compute capability) run on the host and in `dev run --gpu=nvidia`, outputs compared
# line by line, then both timed with hyperfine (the env's start included inside).
# Fails at once, before any set-up, on a machine without an NVIDIA GPU.
# Run as root after `./install.sh --dev`; the env gets gcc from Debian's package mirror.
#   RUNS  hyperfine runs per command (default 10)
set -eu
RUNS=${RUNS:-10}
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1 || [ ! -e /dev/nvidiactl ]; then
    echo "benches/gpu.sh: no NVIDIA GPU here (nvidia-smi -L fails or /dev/nvidiactl is missing); run it on a machine with one and its driver loaded" >&2
    exit 1
fi
. "$(dirname "$0")/lib.sh"

cat > "$WORK/project/query.c" <<'C'
#include <dlfcn.h>
#include <stdio.h>
typedef int (*init_t)(unsigned);
typedef int (*count_t)(int *);
typedef int (*get_t)(int *, int);
typedef int (*name_t)(char *, int, int);
typedef int (*mem_t)(size_t *, int);
typedef int (*attr_t)(int *, int, int);
int main(void) {
    void *cuda = dlopen("libcuda.so.1", RTLD_NOW);
    if (!cuda) { fprintf(stderr, "dlopen libcuda.so.1: %s\n", dlerror()); return 1; }
    init_t cuInit = (init_t)dlsym(cuda, "cuInit");
    count_t cuDeviceGetCount = (count_t)dlsym(cuda, "cuDeviceGetCount");
    get_t cuDeviceGet = (get_t)dlsym(cuda, "cuDeviceGet");
    name_t cuDeviceGetName = (name_t)dlsym(cuda, "cuDeviceGetName");
    mem_t cuDeviceTotalMem = (mem_t)dlsym(cuda, "cuDeviceTotalMem_v2");
    attr_t cuDeviceGetAttribute = (attr_t)dlsym(cuda, "cuDeviceGetAttribute");
    int rc = cuInit(0), n = 0;
    if (rc) { fprintf(stderr, "cuInit: %d\n", rc); return 1; }
    cuDeviceGetCount(&n);
    printf("devices: %d\n", n);
    for (int i = 0; i < n; i++) {
        int dev, major = 0, minor = 0; char name[256]; size_t mem = 0;
        cuDeviceGet(&dev, i);
        cuDeviceGetName(name, sizeof name, dev);
        cuDeviceTotalMem(&mem, dev);
        cuDeviceGetAttribute(&major, 75, dev); /* CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR */
        cuDeviceGetAttribute(&minor, 76, dev); /* ..._MINOR */
        printf("%d: %s, %zu MiB, compute %d.%d\n", i, name, mem >> 20, major, minor);
    }
    return 0;
}
C
printf 'image = "%s"\n[tools]\npackages = ["gcc", "libc6-dev"]\n' "$IMAGE" > "$WORK/project/dev.toml"
chown -R "$USER_NAME:" "$WORK/project"
DEV="$WORK/bin/dev"
"$AS" "$DEV" run --gpu=nvidia -- gcc -O2 -o query-env query.c -ldl
gcc -O2 -o "$WORK/query-host" "$WORK/project/query.c" -ldl
chmod 0755 "$WORK/query-host"

SMI="nvidia-smi --query-gpu=name,uuid,driver_version,memory.total,compute_cap --format=csv,noheader"
fail=0
compare() {
    what=$1 host=$2 inside=$3
    echo "== $what"
    echo "host:   $host" | sed '2,$s/^/        /'
    echo "inside: $inside" | sed '2,$s/^/        /'
    if [ "$host" = "$inside" ]; then echo "same"; else echo "DIFFERENT"; fail=1; fi
}
compare "nvidia-smi" "$("$AS" $SMI)" "$("$AS" "$DEV" run --gpu=nvidia -- $SMI)"
compare "CUDA device query" "$("$AS" "$WORK/query-host")" "$("$AS" "$DEV" run --gpu=nvidia -- ./query-env)"

hyperfine -N --runs "$RUNS" --warmup 1 \
    -n "host: query" "$AS $WORK/query-host" \
    -n "env (start): query" "$AS $DEV run --gpu=nvidia -- ./query-env" \
    -n "host: nvidia-smi" "$AS $SMI" \
    -n "env (start): nvidia-smi" "$AS $DEV run --gpu=nvidia -- $SMI"
exit "$fail"
