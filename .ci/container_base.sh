#!/usr/bin/env bash
# Assembles, from Debian's own packages, the base image CI puts the server
# in, in place of gcr.io/distroless/cc-debian12:nonroot, which cannot be
# pulled here. It is made the way distroless is made: the packages' files
# are unpacked and no maintainer script runs, so no shell, package manager
# or other program comes along; then the few files those scripts would have
# written are added.
#
#   packages   base-files, netbase, tzdata, ca-certificates, libc6, libgcc-s1
#              and its gcc-N-base (copyright only), of the machine's Debian
#              release, so glibc matches the one the binary was linked
#              against on the host. distroless/cc also carries libssl3,
#              libstdc++6 and libgomp1; the server links none of them (the
#              image's `--version` run in container_image.sh proves the
#              loader finds everything it needs), so they stay out.
#   removed    documentation but the copyright files, update-ca-certificates
#              and update-motd.d (shell scripts), the separate certificates
#              (the bundle holds them).
#   added      /etc/ssl/certs/ca-certificates.crt (the bundle
#              update-ca-certificates would write), /etc/passwd and
#              /etc/group with root, nobody and nonroot (65532, home
#              /home/nonroot), /etc/nsswitch.conf, /tmp (1777), and each
#              package's control record in /var/lib/dpkg/status.d/, where
#              image scanners look for what a distroless image holds.
#   config     USER 65532:65532, WORKDIR /home/nonroot, PATH and
#              SSL_CERT_FILE, as distroless's :nonroot sets them.
#
# Prints the image's name, localhost/chatbot-backend-base:<key>, on stdout
# (everything else goes to stderr). <key> hashes this script and the
# packages' versions in the machine's apt lists, so a rerun reuses the image
# and a Debian update (after `apt-get update`) or a change here builds a new
# one; the previous tags are removed. The .deb files are kept in
# $CHATBOT_IMAGE_CACHE/debs (default ~/.cache/chatbot-backend-image), so
# only a new version is downloaded; with nothing cached the whole assembly
# takes a few seconds.
#
# Needs: root (file ownership in the image), apt-get, apt-cache, dpkg-deb,
# GNU tar, sha256sum, podman (with the CONTAINERS_CONF that
# .ci/container_image.sh sets).
set -euo pipefail

cd "$(dirname "$0")/.."
SCRIPT=.ci/container_base.sh
REPOSITORY=localhost/chatbot-backend-base
CACHE=${CHATBOT_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/chatbot-backend-image}
DEBS=$CACHE/debs

log() { printf 'container_base: %s\n' "$*" >&2; }

# package=version for each package named, as the apt lists have them now.
candidates() {
    apt-cache policy "$@" 2>/dev/null | awk '
        /^[^ ]/ { sub(/:$/, "", $1); package = $1 }
        /^  Candidate:/ && $2 != "(none)" { print package "=" $2 }'
}

# The gcc-N-base that carries libgcc-s1's copyright, whatever N this
# release has.
gcc_base() {
    apt-cache show --no-all-versions libgcc-s1 2>/dev/null \
        | sed -n 's/^Depends: //p' | grep -o 'gcc-[0-9]*-base' | head -n 1 || true
}

packages=(base-files netbase tzdata ca-certificates libc6 libgcc-s1)
gcc=$(gcc_base)
if [[ -z "$gcc" ]]; then
    log "apt lists are missing: apt-get update"
    apt-get update -qq >&2
    gcc=$(gcc_base)
fi
packages+=("$gcc")
mapfile -t versions < <(candidates "${packages[@]}")
if [[ ${#versions[@]} -ne ${#packages[@]} ]]; then
    log "the apt lists have versions for ${versions[*]:-nothing}, not all of ${packages[*]}"
    exit 1
fi

key=$( { cat "$SCRIPT"; printf '%s\n' "${versions[@]}"; } | sha256sum | cut -c1-16)
# shellcheck source=/dev/null # the machine's own
release=$(. /etc/os-release && echo "${ID}${VERSION_ID}")
IMAGE="$REPOSITORY:$release-$key"

if podman image exists "$IMAGE"; then
    log "reusing $IMAGE"
    echo "$IMAGE"
    exit 0
fi

log "assembling $IMAGE from ${versions[*]}"
mkdir -p "$DEBS"
debs=()
for pin in "${versions[@]}"; do
    package=${pin%%=*}
    version=${pin#*=}
    # apt-get download's file name: the epoch's colon is escaped.
    deb=$(compgen -G "$DEBS/${package}_${version//:/%3a}_*.deb" | head -n 1 || true)
    if [[ -z "$deb" ]]; then
        if ! (cd "$DEBS" && apt-get download -qq -o APT::Sandbox::User=root "$pin" >&2); then
            # Lists older than the archive, which keeps no superseded
            # versions: update them once and start again.
            [[ -z "${CONTAINER_BASE_UPDATED:-}" ]] || exit 1
            log "could not download $pin: apt-get update, then again"
            apt-get update -qq >&2
            CONTAINER_BASE_UPDATED=1 exec "$PWD/$SCRIPT"
        fi
        deb=$(compgen -G "$DEBS/${package}_${version//:/%3a}_*.deb" | head -n 1)
    fi
    debs+=("$deb")
done

WORK=$(mktemp -d -t container_base.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/rootfs
mkdir -p "$ROOT/var/lib/dpkg/status.d"
for deb in "${debs[@]}"; do
    package=$(dpkg-deb --field "$deb" Package)
    dpkg-deb --extract "$deb" "$ROOT"
    dpkg-deb --field "$deb" >"$ROOT/var/lib/dpkg/status.d/$package"
done

# The bundle update-ca-certificates would write, in its order.
mkdir -p "$ROOT/etc/ssl/certs"
find "$ROOT/usr/share/ca-certificates" -name '*.crt' | LC_ALL=C sort \
    | xargs cat >"$ROOT/etc/ssl/certs/ca-certificates.crt"
if ! grep -q 'BEGIN CERTIFICATE' "$ROOT/etc/ssl/certs/ca-certificates.crt"; then
    log "no certificates in the CA bundle"
    exit 1
fi

# Of the documentation, only each package's copyright file.
for dir in "$ROOT"/usr/share/doc/*; do
    [[ -d "$dir" && ! -L "$dir" ]] || continue
    find "$dir" -mindepth 1 -maxdepth 1 ! -name copyright -exec rm -rf {} +
done
rm -rf "$ROOT/usr/share/ca-certificates" "$ROOT/usr/share/man" "$ROOT/usr/share/info" \
    "$ROOT/usr/share/lintian" "$ROOT/usr/share/base-files" "$ROOT/etc/update-motd.d" \
    "$ROOT/usr/sbin/update-ca-certificates"

cat >"$ROOT/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
cat >"$ROOT/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
nonroot:x:65532:
EOF
cat >"$ROOT/etc/nsswitch.conf" <<'EOF'
passwd: files
group: files
shadow: files
hosts: files dns
networks: files
protocols: files
services: files
ethers: files
rpc: files
EOF
mkdir -p "$ROOT/home/nonroot" "$ROOT/root" "$ROOT/tmp"
chown 65532:65532 "$ROOT/home/nonroot"
chmod 0700 "$ROOT/home/nonroot" "$ROOT/root"
chmod 1777 "$ROOT/tmp"

# Nothing that runs: no file in a bin/ or sbin/ directory, no shell script.
# (`find -quit` prints the first one; none is expected.)
stray=$(find "$ROOT" -path '*bin/*' ! -type d -print -quit)
if [[ -n "$stray" ]]; then
    log "a program is left in the base: ${stray#"$ROOT"}"
    exit 1
fi

# One layer, owned as unpacked (root, but /home/nonroot), with fixed times
# so the same inputs give the same layer.
tar --create --file "$WORK/rootfs.tar" --directory "$ROOT" --numeric-owner \
    --sort=name --mtime=@0 .
podman import \
    --change 'USER 65532:65532' \
    --change 'WORKDIR /home/nonroot' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --message "distroless/cc-like base from ${versions[*]}" \
    --quiet "$WORK/rootfs.tar" "$IMAGE" >/dev/null

# Earlier bases (other keys) are no longer used by anything CI builds.
for old in $(podman images --format '{{.Repository}}:{{.Tag}}' "$REPOSITORY"); do
    [[ "$old" == "$IMAGE" ]] && continue
    podman rmi "$old" >/dev/null 2>&1 || log "could not remove $old (still in use?)"
done

log "built $IMAGE ($(du -sh "$ROOT" | cut -f1) unpacked)"
echo "$IMAGE"
