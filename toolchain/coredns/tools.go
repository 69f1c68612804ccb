//go:build tools

// Package tools pins CoreDNS: the simulated cluster's DNS, with the kubernetes plugin.
package tools

import (
	_ "github.com/coredns/coredns"
)
