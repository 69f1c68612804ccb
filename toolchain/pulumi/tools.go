//go:build tools

// Package tools pins the Pulumi CLI so that `go build` takes it at the version in go.mod.
package tools

import _ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
