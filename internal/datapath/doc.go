// Package datapath loads and attaches mptcpgo's BPF programs and exposes their maps and events.
package datapath
