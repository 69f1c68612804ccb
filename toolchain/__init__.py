"""The real tools the platform is tested with, built from the Go module proxy: see toolchain/build.py."""
