#!/usr/bin/env bash
# Builds the ROS interface packages in interfaces/ into the venv given as $1 (filled in by the interfaces work).
set -euo pipefail
echo "build_interfaces: no interface packages yet"
