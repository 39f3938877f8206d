package convert

import "errors"

// Cookie is the Cookie TLV (§5.2.7): an opaque value, typically bound to the Client's address,
// that a converter may require in every SYN to resist spoofed sources, like a TCP Fast Open
// cookie but in the payload. A converter that requires one and gets none answers Missing
// Cookie with the cookie to use (NewMissingCookieError); a wrong one, Not Authorized.
//
//	Type=22 | Length | Zero (16)
//	Opaque Cookie, zero-padded to a 32-bit boundary
//
// The Zero field is ignored on receipt. The RFC does not carry the cookie's own length, so
// Parse returns Opaque as received, padding included: cookies whose length is a multiple of 4
// come back unchanged.
type Cookie struct {
	Opaque []byte
}

var _ TLV = Cookie{}

// Type returns TypeCookie.
func (Cookie) Type() Type { return TypeCookie }

// Len returns 4 plus the cookie padded to a multiple of 4.
func (c Cookie) Len() int { return 4 + pad4(len(c.Opaque)) }

// Append appends the encoded TLV to b.
func (c Cookie) Append(b []byte) []byte {
	b = appendTLVHeader(b, TypeCookie, c.Len())
	b = append(b, 0, 0)
	b = append(b, c.Opaque...)
	return appendPadding(b, len(c.Opaque))
}

func (c Cookie) check() error {
	if len(c.Opaque) == 0 {
		return errEmptyCookie
	}
	return nil
}

var errEmptyCookie = errors.New("empty cookie")

// parseCookie decodes a Cookie TLV; a cookie of no bytes is malformed.
func parseCookie(b []byte) (Cookie, error) {
	if len(b) == 4 {
		return Cookie{}, malformed(1, "%v", errEmptyCookie)
	}
	return Cookie{Opaque: b[4:]}, nil
}
