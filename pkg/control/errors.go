package control

import (
	"errors"
	"fmt"
	"net"
	"syscall"
)

var (
	errConnClosed  = net.ErrClosed
	errWriteClosed = errors.New("mptcp: write after CloseWrite")
	// ErrFastclose is the error of a connection the peer aborted with MP_FASTCLOSE.
	ErrFastclose = fmt.Errorf("mptcp: connection closed by peer (MP_FASTCLOSE): %w", syscall.ECONNRESET)
	// ErrNoDataFin is the error of a connection whose only subflow ended before the peer's DATA_FIN.
	ErrNoDataFin = errors.New("mptcp: subflow closed before the peer's DATA_FIN")
)

// ResetError is the error of a connection whose subflow was reset with an MP_TCPRST reason.
type ResetError struct {
	Reason    uint8
	Transient bool
	Err       error
}

func (e *ResetError) Error() string {
	return fmt.Sprintf("mptcp: subflow reset by peer, MP_TCPRST reason %d (transient %t): %v", e.Reason, e.Transient, e.Err)
}

func (e *ResetError) Unwrap() error { return e.Err }

// MP_TCPRST reasons (RFC 8684 §3.6).
const (
	RstUnspecified     = 0
	RstMPTCPError      = 1
	RstLackOfResources = 2
	RstAdminProhibited = 3
	RstTooMuchData     = 4
	RstPerformance     = 5
	RstMiddlebox       = 6
)
