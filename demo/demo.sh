#!/usr/bin/env bash
# The cowfs tour: what `make demo` runs (in a private mount namespace, temp store).
# Builds a 2-layer image from busybox-static with plain tar + sha256sum (an OCI layout),
# imports it, runs a detached container that writes and deletes files, shows inspect
# (LowerDir/UpperDir/MergedDir/WorkDir), diff, commit, runs the new image, shows a volume
# surviving rm, and removes everything it made.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
export PATH="$here/.venv/bin:$PATH"
work="$(mktemp -d /tmp/cowfs-demo.XXXXXX)"
export COWFS_ROOT="$work/store"
cleanup() {
  cowfs rm -f web >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '\033[2m$ %s\033[0m\n' "$*"; "$@"; }
busybox="$(command -v busybox || true)"
[ -x /bin/busybox ] && busybox=/bin/busybox
file -L "$busybox" | grep -q 'statically linked' || { echo "demo: needs busybox-static" >&2; exit 1; }

step "cowfs version"
cowfs version

step "build a 2-layer OCI image with tar and sha256sum (no docker, no buildah)"
layout="$work/layout"; mkdir -p "$layout/blobs/sha256" "$work/l1/bin" "$work/l2/app"
for d in dev proc sys tmp etc root data; do mkdir -p "$work/l1/$d"; done
cp "$busybox" "$work/l1/bin/busybox"
for a in $("$busybox" --list); do [ "$a" = busybox ] || ln -s busybox "$work/l1/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$work/l1/etc/passwd"
printf 'hello from layer 2\n' > "$work/l2/app/hello.txt"
printf 'this file will be deleted\n' > "$work/l2/app/delete-me"
blob() {  # blob FILE MEDIATYPE -> prints a descriptor, stores the blob
  local d; d="$(sha256sum "$1" | cut -d' ' -f1)"; cp "$1" "$layout/blobs/sha256/$d"
  printf '{"mediaType":"%s","digest":"sha256:%s","size":%s}' "$2" "$d" "$(stat -c %s "$1")"
}
tarit() { tar --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -C "$1" -cf "$2" .; }
tarit "$work/l1" "$work/layer1.tar"; tarit "$work/l2" "$work/layer2.tar"
l1="$(blob "$work/layer1.tar" application/vnd.oci.image.layer.v1.tar)"
l2="$(blob "$work/layer2.tar" application/vnd.oci.image.layer.v1.tar)"
id1="sha256:$(sha256sum "$work/layer1.tar" | cut -d' ' -f1)"
id2="sha256:$(sha256sum "$work/layer2.tar" | cut -d' ' -f1)"
printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["sh"],"WorkingDir":"/app"},"rootfs":{"type":"layers","diff_ids":["%s","%s"]}}' \
  "$id1" "$id2" > "$work/config.json"
cfg="$(blob "$work/config.json" application/vnd.oci.image.config.v1+json)"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":%s,"layers":[%s,%s]}' \
  "$cfg" "$l1" "$l2" > "$work/manifest.json"
man="$(blob "$work/manifest.json" application/vnd.oci.image.manifest.v1+json)"
printf '{"imageLayoutVersion":"1.0.0"}' > "$layout/oci-layout"
printf '{"schemaVersion":2,"manifests":[%s]}' "$man" > "$layout/index.json"
show cowfs import --tag demo:1 "$layout"
show cowfs images

step "run a detached container that writes, modifies and deletes files"
show cowfs run -d --name web -v demodata:/data demo:1 sh -c \
  'echo changed >> /app/hello.txt; rm /app/delete-me; echo new > /app/new.txt;
   echo kept-in-volume > /data/keep; touch /tmp/ready; exec sleep 600'
for _ in $(seq 100); do cowfs exec web test -e /tmp/ready 2>/dev/null && break; sleep 0.1; done
show cowfs ps
show cowfs exec web ps
show cowfs exec web cat /app/hello.txt

step "inspect: the storage driver's view (docker inspect shape)"
show cowfs inspect -f GraphDriver.Data web
upper="$(cowfs inspect -f GraphDriver.Data.UpperDir web)"
echo "UpperDir holds only the changes (the deleted file is a char 0/0 whiteout):"
show ls -l "$upper/app"

step "diff: A added, C changed, D deleted"
show cowfs diff web

step "commit the writable layer as a new image (old layers + one)"
show cowfs commit web demo:2
show cowfs inspect -f RootFS.Layers demo:2
show cowfs stop -t 1 web
show cowfs run --rm demo:2 sh -c 'ls /app; cat /app/new.txt'
echo "...while the original image is unchanged:"
show cowfs run --rm demo:1 ls /app

step "volumes live outside the writable layer: they survive rm"
show cowfs rm web
show cowfs volume ls
show cowfs run --rm -v demodata:/data demo:1 cat /data/keep

step "clean up"
show cowfs volume rm demodata
show cowfs rmi demo:2
show cowfs rmi demo:1
show cowfs ps -a
echo
echo "demo: done (temp store $work removed)"
