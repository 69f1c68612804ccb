//go:build tools

// Package tools pins the Python language host. Since the host became a module of its own it is published
// only as pseudo-versions, none of which the Go module proxy serves us; v3.68.0 is the newest sdk/v3 release
// that still carries it as a package (see toolchain/build.py for what that costs).
package tools

import _ "github.com/pulumi/pulumi/sdk/v3/python/cmd/pulumi-language-python"
