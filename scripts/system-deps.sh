#!/usr/bin/env bash
# Install the Debian packages the tests need when they are missing: FluidSynth (libfluidsynth3), used
# by the corpus generator through pyfluidsynth, and rsvg-convert (librsvg2-bin), which rasterises SVG
# instrument pictures. Runs apt-get only if something is missing.
set -euo pipefail
missing=()
if ! ldconfig -p 2>/dev/null | grep -q 'libfluidsynth\.so\.3'; then missing+=(libfluidsynth3); fi
if ! command -v rsvg-convert >/dev/null 2>&1; then missing+=(librsvg2-bin); fi
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
echo "system-deps: installing ${missing[*]}"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
