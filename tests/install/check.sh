#!/bin/sh
# Installs the built tree into a scratch prefix and builds a tiny user program against it twice:
# once with find_package(filo), once with pkg-config. Usage: check.sh BUILD_DIR WORK_DIR
set -eu
build="$1"
work="$2"
here="$(cd "$(dirname "$0")" && pwd)"
rm -rf "$work"
mkdir -p "$work"
cmake --install "$build" --prefix "$work/prefix" >"$work/install.log"

cmake -S "$here/consumer" -B "$work/cmake-build" -DCMAKE_PREFIX_PATH="$work/prefix" >"$work/configure.log"
cmake --build "$work/cmake-build" >"$work/build.log"
LD_LIBRARY_PATH="$work/prefix/lib" "$work/cmake-build/consumer"

libdir=$(ls -d "$work/prefix"/lib*/pkgconfig | head -n 1)
flags=$(PKG_CONFIG_PATH="$libdir" pkg-config --cflags --libs filo)
cc -std=c11 -Wall -Werror "$here/consumer/main.c" $flags -o "$work/consumer-pc"
LD_LIBRARY_PATH="$(dirname "$libdir")" "$work/consumer-pc"
echo "install-consumer: find_package and pkg-config builds both ran"
