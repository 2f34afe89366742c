#!/usr/bin/env bash
# Builds the ROS interface packages in interfaces/ into the venv given as $1 (default .venv).
#
#   bash scripts/build_interfaces.sh .venv
#
# - interfaces/bevfusion_msgs is always built.
# - interfaces/compat/{tf2_msgs,vision_msgs} are built only where the environment lacks the real package
#   (ROS 2 from PyPI wheels has neither). A package is "ours" when the venv holds our build stamp.
# - Each package is configured with plain cmake (no colcon), built under build/interfaces/<pkg> and
#   installed into the venv, where rclpy finds it with no environment variables.
# - Idempotent: a package whose sources (msg files, CMakeLists.txt, package.xml) and target venv are
#   unchanged since its last install is skipped in milliseconds.
#
# On a full ROS 2 install use colcon instead:  colcon build --base-paths . interfaces
# (interfaces/compat carries a COLCON_IGNORE: the system provides tf2_msgs and vision_msgs there).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_ARG="${1:-.venv}"
if [[ ! -x "$VENV_ARG/bin/python" ]]; then
  echo "build_interfaces: error: no Python at $VENV_ARG/bin/python (create the venv first: make setup)" >&2
  exit 2
fi
VENV="$(cd "$VENV_ARG" && pwd)"
PY="$VENV/bin/python"
BUILD_ROOT="$ROOT/build/interfaces"
JOBS="$(nproc 2>/dev/null || echo 2)"

GENERATOR=()
if command -v ninja >/dev/null 2>&1 || [[ -x "$VENV/bin/ninja" ]]; then
  GENERATOR=(-G Ninja)
  export PATH="$VENV/bin:$PATH"
fi

# Fingerprint of a package's sources plus the install target: a changed .msg or a new venv rebuilds.
fingerprint() {
  local src="$1"
  {
    echo "$VENV"
    (cd "$src" && find . -type f \( -name '*.msg' -o -name '*.srv' -o -name '*.action' \
        -o -name 'CMakeLists.txt' -o -name 'package.xml' \) -print0 | sort -z | xargs -0 sha256sum)
  } | sha256sum | cut -d' ' -f1
}

build_package() {
  local name="$1" src="$2" compat="$3"
  local stamp="$VENV/share/$name/.bevfusion-interfaces-stamp"
  local want
  want="$(fingerprint "$src")"
  if [[ -f "$stamp" ]]; then
    if [[ "$(cat "$stamp")" == "$want" ]]; then
      echo "build_interfaces: $name up to date"
      return 0
    fi
  elif [[ "$compat" == 1 ]] && "$PY" -c "import $name.msg" >/dev/null 2>&1; then
    echo "build_interfaces: $name provided by the environment, compat build skipped"
    return 0
  fi

  echo "build_interfaces: building $name"
  local build="$BUILD_ROOT/$name"
  mkdir -p "$build"
  local log="$build/build.log"
  if ! {
    AMENT_PREFIX_PATH="$VENV" cmake -S "$src" -B "$build" "${GENERATOR[@]}" \
      -DCMAKE_PREFIX_PATH="$VENV" \
      -DCMAKE_INSTALL_PREFIX="$VENV" \
      -DPython3_EXECUTABLE="$PY" \
      -DPYTHON_EXECUTABLE="$PY" \
      -DBUILD_TESTING=OFF \
      -DCMAKE_BUILD_TYPE=Release &&
    AMENT_PREFIX_PATH="$VENV" cmake --build "$build" -j "$JOBS" &&
    cmake --install "$build"
  } >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "build_interfaces: error: building $name failed (full log: $log)" >&2
    exit 1
  fi
  if ! "$PY" -c "import $name.msg" >/dev/null 2>&1; then
    echo "build_interfaces: error: $name installed but 'import $name.msg' fails in $PY" >&2
    exit 1
  fi
  echo "$want" >"$stamp"
}

# colcon must not mistake installed package.xml files in the venv or our build trees for sources.
mkdir -p "$BUILD_ROOT"
touch "$VENV/COLCON_IGNORE" "$BUILD_ROOT/COLCON_IGNORE"

build_package tf2_msgs "$ROOT/interfaces/compat/tf2_msgs" 1
build_package vision_msgs "$ROOT/interfaces/compat/vision_msgs" 1
build_package bevfusion_msgs "$ROOT/interfaces/bevfusion_msgs" 0
