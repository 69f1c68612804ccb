//go:build tools

// Package tools pins Prometheus at the version kube-prometheus-stack 88.5.3 deploys (v3.14.0 = module v0.314.0).
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
)
