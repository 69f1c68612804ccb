//go:build tools

// Package tools pins kube-state-metrics at kube-prometheus-stack 88.5.3's v2.20.0.
package tools

import (
	_ "k8s.io/kube-state-metrics/v2"
)
