//go:build tools

// Package tools pins prometheus-operator and its config reloader at kube-prometheus-stack 88.5.3's v0.93.1.
package tools

import (
	_ "github.com/prometheus-operator/prometheus-operator/cmd/operator"
	_ "github.com/prometheus-operator/prometheus-operator/cmd/prometheus-config-reloader"
)
