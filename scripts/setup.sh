#!/usr/bin/env bash
# One-time machine setup for running difix3d and its tests on Debian/Ubuntu:
# Vulkan loader + Mesa (lavapipe runs wgpu on the CPU when there is no GPU), X11/Wayland client
# libraries for the window, Xvfb for headless GUI tests, ImageMagick for the sample-data script,
# ffmpeg for MP4 flythroughs; make for building jemalloc (the binary's allocator);
# then the sample data itself. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(mesa-vulkan-drivers libvulkan1 xvfb xauth imagemagick ffmpeg libxkbcommon-x11-0 libx11-xcb1
    libxcursor1 libxrandr2 libxi6 libwayland-client0 libegl1 make)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "installing: ${missing[*]}"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

scripts/fetch_assets.sh
