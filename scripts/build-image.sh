#!/usr/bin/env bash
# Builds the container image symphony:local from the binary built here (the
# `release` profile unless PROFILE names another), pulling nothing: no base
# image is needed, so this works offline.
#
#   scripts/build-image.sh            # tag symphony:local
#   SYMPHONY_IMAGE=me/symphony:dev scripts/build-image.sh
#   PROFILE=production scripts/build-image.sh   # the build to serve from
#                                                # (slower to build; see Cargo.toml)
#
# The root file system holds only the binary, the shared libraries `ldd`
# names, the dynamic loader, CA certificates when the host has them, an
# nsswitch.conf, /tmp and the data dir /data. There is no /etc/passwd and no
# shell: the node runs as uid 65532. `docker import` turns the tree into an
# image; its --change options set what a Dockerfile would (see
# cluster/Dockerfile for the ordinary multi-stage build).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${SYMPHONY_IMAGE:-symphony:local}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
# The uid the node runs as; it owns /data, which a new named volume copies.
NODE_UID=65532

command -v docker >/dev/null || { echo "error: docker is not installed" >&2; exit 1; }

PROFILE=${PROFILE:-release}
echo "==> cargo build --profile $PROFILE"
cargo build --profile "$PROFILE" --locked --bin symphony
BIN="$TARGET_DIR/$PROFILE/symphony"
[ -x "$BIN" ] || { echo "error: $BIN was not built" >&2; exit 1; }

ROOT=$(mktemp -d)
TAR=$(mktemp)
trap 'rm -rf "$ROOT" "$TAR"' EXIT

echo "==> root file system in $ROOT"
mkdir -p "$ROOT/usr/local/bin" "$ROOT/etc/ssl/certs" "$ROOT/tmp" "$ROOT/data"
chmod 1777 "$ROOT/tmp"
# The release profile keeps line tables for profiling; the image needs none.
if command -v strip >/dev/null; then
    strip --strip-debug -o "$ROOT/usr/local/bin/symphony" "$BIN"
else
    cp "$BIN" "$ROOT/usr/local/bin/symphony"
fi

# Shared libraries and the loader: every absolute path ldd prints
# ("libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" and
# "/lib64/ld-linux-x86-64.so.2 (0x…)"), copied at the same path, symlinks
# resolved.
libs=$(ldd "$BIN" | grep -o '/[^ ]*' || true)
if [ -z "$libs" ]; then
    echo "    (static binary: no shared libraries)"
fi
for lib in $libs; do
    mkdir -p "$ROOT$(dirname "$lib")"
    cp -L "$lib" "$ROOT$lib"
    echo "    $lib"
done
# glibc before 2.34 loads host and DNS lookups from separate NSS modules,
# which ldd does not list (later versions build them into libc).
for lib in $libs; do
    case "$lib" in
        */libc.so.*)
            for nss in "$(dirname "$lib")"/libnss_{files,dns}.so.2; do
                if [ -e "$nss" ]; then
                    cp -L "$nss" "$ROOT$nss"
                    echo "    $nss"
                fi
            done
            ;;
    esac
done
printf 'hosts: files dns\n' >"$ROOT/etc/nsswitch.conf"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    cp -L /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/"
    echo "    /etc/ssl/certs/ca-certificates.crt"
else
    echo "    (no CA certificates on this host; https to outside services from exec tasks will not verify)"
fi

# Everything owned by root, except /data, owned by the node's uid.
tar -C "$ROOT" --numeric-owner --owner=0 --group=0 --exclude=./data -cf "$TAR" .
tar -C "$ROOT" --numeric-owner --owner="$NODE_UID" --group="$NODE_UID" -rf "$TAR" ./data

echo "==> docker import $IMAGE"
docker import \
    --change 'ENTRYPOINT ["/usr/local/bin/symphony"]' \
    --change 'CMD ["node"]' \
    --change 'ENV PATH=/usr/local/bin' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV SYMPHONY_LISTEN=0.0.0.0:7400' \
    --change 'ENV SYMPHONY_HTTP=0.0.0.0:8080' \
    --change 'ENV SYMPHONY_DATA_DIR=/data' \
    --change 'ENV SYMPHONY_LOG=info' \
    --change 'EXPOSE 7400 8080' \
    --change 'VOLUME /data' \
    --change 'WORKDIR /data' \
    --change "USER $NODE_UID:$NODE_UID" \
    --message "symphony $(git describe --always --dirty 2>/dev/null || echo local), from the local release build" \
    "$TAR" "$IMAGE" >/dev/null

# The image must at least start: print the version.
docker run --rm "$IMAGE" --version
echo "==> built $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE") bytes)"
