package h2serve

import (
	"encoding/binary"

	"golang.org/x/net/http2"
)

// frameScanner follows one direction of an HTTP/2 connection frame by frame, from the
// 9-byte frame headers alone, without decoding anything: the HTTP/2 protocol is
// x/net/http2's. It tells the connection where frames begin and end (so that a frame can
// be put between two others) and hands it the few facts the drain needs: which streams
// open and end, a GOAWAY's last stream id, a PING's data.
type frameScanner struct {
	skip  int // bytes of the client preface still to pass (a TLS connection's reads)
	hdr   [9]byte
	nhdr  int      // header bytes gathered
	left  int      // payload bytes of the current frame still to pass
	want  int      // payload bytes of the current frame to capture (GOAWAY, PING)
	data  [8]byte  // the captured payload prefix
	ndata int      // payload bytes captured
	cur   frameTop // the current frame, once its header is complete
}

// frameTop is what the scanner reports of one frame.
type frameTop struct {
	typ      http2.FrameType
	flags    http2.Flags
	streamID uint32
	data     [8]byte // the first bytes of the payload: GOAWAY's last stream id, PING's data
}

// atBoundary reports whether the bytes so far end exactly at the end of a frame.
func (s *frameScanner) atBoundary() bool {
	return s.skip == 0 && s.nhdr == 0 && s.left == 0 && s.want == 0
}

// advance passes the bytes of p up to the end of the current frame, or all of p, calling
// onFrame once per frame whose header (and captured prefix) is complete. It returns how
// many bytes of p it passed.
func (s *frameScanner) advance(p []byte, onFrame func(frameTop)) int {
	n := 0
	if s.skip > 0 {
		k := min(s.skip, len(p))
		s.skip -= k
		return k
	}
	for n < len(p) {
		switch {
		case s.nhdr < len(s.hdr):
			k := copy(s.hdr[s.nhdr:], p[n:])
			s.nhdr += k
			n += k
			if s.nhdr < len(s.hdr) {
				return n
			}
			length := int(s.hdr[0])<<16 | int(s.hdr[1])<<8 | int(s.hdr[2])
			s.cur = frameTop{
				typ:      http2.FrameType(s.hdr[3]),
				flags:    http2.Flags(s.hdr[4]),
				streamID: binary.BigEndian.Uint32(s.hdr[5:9]) & (1<<31 - 1),
			}
			s.left = length
			s.want = 0
			switch s.cur.typ {
			case http2.FrameGoAway:
				s.want = min(4, length)
			case http2.FramePing:
				s.want = min(8, length)
			}
			s.ndata = 0
			if s.want == 0 {
				onFrame(s.cur)
			}
		case s.want > 0:
			k := min(s.want, len(p)-n)
			copy(s.data[s.ndata:], p[n:n+k])
			s.ndata += k
			s.want -= k
			s.left -= k
			n += k
			if s.want > 0 {
				return n
			}
			s.cur.data = s.data
			onFrame(s.cur)
		default:
			k := min(s.left, len(p)-n)
			s.left -= k
			n += k
		}
		if s.left == 0 && s.want == 0 {
			s.nhdr = 0
			return n // the end of a frame
		}
	}
	return n
}
