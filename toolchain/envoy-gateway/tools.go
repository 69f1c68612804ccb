//go:build tools

// Package tools pins Envoy Gateway's controller (also its certgen and the proxy's shutdown manager) at
// gateway-helm v1.9.0's v1.9.0.
package tools

import (
	_ "github.com/envoyproxy/gateway/cmd/envoy-gateway"
)
