#!/usr/bin/env bash
# Installs what `avsep data synth` builds its offline corpus from, when it is missing: Debian packages
# for the pictures (openclipart SVGs, Noto Color Emoji, the rsvg-convert rasteriser) and the sound
# (General MIDI SoundFonts, FluidSynth), and the npm iconify emoji/icon sets, into the assets prefix
# ${AVSEP_ASSETS:-/opt/avsep-assets} (outside the repository: no third-party picture is committed).
# Idempotent: what is installed already is left alone. Prints what it did.
#
# Usage: scripts/install-assets.sh [--check]
#   --check   only report what is missing (exit 1 if anything is), install nothing.
set -euo pipefail

PREFIX="${AVSEP_ASSETS:-/opt/avsep-assets}"
# Sound: FluidR3 (MIT), MuseScore General Lite (MIT), csound's sf_GMbank (public domain), the AVL drum
# kits (CC-BY-SA-3.0) -- see avsep_cli/corpus/classes.py for which recordings they share.
APT_PKGS=(openclipart-svg fonts-noto-color-emoji librsvg2-bin fluid-soundfont-gm
          musescore-general-soundfont-small csound-soundfont avldrums.lv2-soundfont libfluidsynth3)
# Licences (from each set's icons.json; see avsep_cli/corpus/pictures.py): MIT: fluent-emoji,
# fluent-emoji-flat, fluent-emoji-high-contrast, dinkie-icons, qlementine-icons, nimbus, f7, tdesign,
# boxicons, bxs, gg, pixelarticons, wpf; Apache-2.0: noto, noto-v1, fxemoji, mdi, ri; CC0-1.0: pinhead;
# OFL-1.1: picon, whh; CC-BY-4.0 (attribution): twemoji, emojione, emojione-monotone, streamline-emojis,
# streamline-cyber, streamline-cyber-color, streamline-kameleon-color, streamline-stickies-color, codicon;
# CC-BY-SA-4.0: openmoji, emojione-v1, si-glyph; CC-BY-3.0: game-icons.
# Never installed for the corpus: the sets reserved for the independent evaluation and their variants
# (pictures.RESERVED_ICON_SETS, RESERVED_VARIANTS), non-commercial (CC-BY-NC*) and GPL sets.
NPM_SETS=(fluent-emoji fluent-emoji-flat fluent-emoji-high-contrast noto noto-v1 fxemoji twemoji openmoji
          game-icons mdi emojione emojione-monotone emojione-v1 streamline-emojis streamline-cyber
          streamline-cyber-color streamline-kameleon-color streamline-stickies-color codicon si-glyph
          dinkie-icons qlementine-icons nimbus f7 tdesign boxicons bxs gg pixelarticons wpf ri pinhead
          picon whh)

check_only=0
case "${1:-}" in
  --check) check_only=1 ;;
  "") ;;
  -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
  *) echo "unknown option: $1 (try --help)" >&2; exit 2 ;;
esac

SUDO=()
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO=(sudo); fi

missing_apt=()
for p in "${APT_PKGS[@]}"; do
  if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    echo "apt: $p already installed"
  else
    missing_apt+=("$p")
  fi
done

missing_npm=()
for s in "${NPM_SETS[@]}"; do
  if [ -f "$PREFIX/node_modules/@iconify-json/$s/icons.json" ]; then
    echo "npm: @iconify-json/$s already in $PREFIX"
  else
    missing_npm+=("@iconify-json/$s")
  fi
done

if [ "$check_only" -eq 1 ]; then
  [ ${#missing_apt[@]} -gt 0 ] && echo "missing apt packages: ${missing_apt[*]}"
  [ ${#missing_npm[@]} -gt 0 ] && echo "missing npm packages in $PREFIX: ${missing_npm[*]}"
  if [ ${#missing_apt[@]} -eq 0 ] && [ ${#missing_npm[@]} -eq 0 ]; then echo "all assets present"; exit 0; fi
  exit 1
fi

if [ ${#missing_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  # Package lists are empty on a fresh machine: update first then; otherwise try, and update on failure.
  if ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then
    echo "apt: updating package lists"
    "${SUDO[@]}" apt-get update -q
  fi
  echo "apt: installing ${missing_apt[*]}"
  if ! "${SUDO[@]}" apt-get install -y -q "${missing_apt[@]}"; then
    echo "apt: install failed, updating package lists and retrying"
    "${SUDO[@]}" apt-get update -q
    "${SUDO[@]}" apt-get install -y -q "${missing_apt[@]}"
  fi
fi

if [ ${#missing_npm[@]} -gt 0 ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "npm: not found, installing Debian's npm"
    "${SUDO[@]}" apt-get install -y -q npm
  fi
  NPM=(npm)
  if ! mkdir -p "$PREFIX" 2>/dev/null || [ ! -w "$PREFIX" ]; then
    "${SUDO[@]}" mkdir -p "$PREFIX"
    NPM=("${SUDO[@]}" npm)
  fi
  echo "npm: installing ${missing_npm[*]} into $PREFIX"
  "${NPM[@]}" install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error "${missing_npm[@]}"
fi

echo "assets ready: Debian packages (${APT_PKGS[*]}) and iconify sets in $PREFIX"
echo "the corpus generator finds the npm sets through --assets DIR, \$AVSEP_ASSETS or /opt/avsep-assets"
