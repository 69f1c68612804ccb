//go:build tools

// Package tools pins prometheus-adapter at the prometheus-adapter 5.3.0 chart's v0.12.0.
package tools

import (
	_ "sigs.k8s.io/prometheus-adapter/cmd/adapter"
)
