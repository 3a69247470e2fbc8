#!/usr/bin/env bash
# Photographs for the `lite` model, from Debian packages (bookworm): download, unpack, then
# scripts/prepare_photos.py picks the listed photos and makes DATA/{train,val,test-hr}.
# Usage: scripts/fetch_photos.sh DATA_DIR   (DATA_DIR outside git, e.g. /work/data-lite; needs apt-get)
# The versions are pinned: another version may hold other files. Provenance and licences:
# src/resshift_cli/builtin/lite/MODEL_CARD.md ("Data").
set -euo pipefail
data=${1:?usage: scripts/fetch_photos.sh DATA_DIR}
packages=(
  mate-backgrounds=1.26.0-1
  lomiri-wallpapers-20.04=20.04.0-2
  plasma-workspace-wallpapers=4:5.27.5-2
)
mkdir -p "$data/debs" "$data/x"
cd "$data/debs"
for spec in "${packages[@]}"; do
  name=${spec%%=*}
  if ! compgen -G "${name}_*.deb" >/dev/null; then
    apt-get download "$spec"
  fi
  rm -rf "../x/$name"
  dpkg -x "${name}"_*.deb "../x/$name"
done
cd - >/dev/null
python "$(dirname "$0")/prepare_photos.py" "$data/x" "$data"
