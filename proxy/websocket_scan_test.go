package proxy

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// wsFrame builds one frame: opcode, payload length n (bytes of 'x'), masked or not.
func wsFrame(opcode byte, n int, masked bool) []byte {
	f := []byte{0x80 | opcode}
	mask := byte(0)
	if masked {
		mask = 0x80
	}
	switch {
	case n < 126:
		f = append(f, mask|byte(n))
	case n < 1<<16:
		f = append(f, mask|126)
		f = binary.BigEndian.AppendUint16(f, uint16(n))
	default:
		f = append(f, mask|127)
		f = binary.BigEndian.AppendUint64(f, uint64(n))
	}
	if masked {
		f = append(f, 1, 2, 3, 4)
	}
	return append(f, bytes.Repeat([]byte{'x'}, n)...)
}

// The scanner finds every frame end of a stream of frames of every header form, however
// the stream is cut into writes, and sees a close frame pass.
func TestFrameScannerFindsEveryBoundary(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := []int{0, 1, 2, 125, 126, 127, 200, 65535, 65536, 70000}
	for round := range 200 {
		var stream []byte
		ends := map[int]bool{}
		closeAt := -1
		for range 1 + rng.IntN(8) {
			op := byte(rng.IntN(3)) // continuation, text, binary
			if rng.IntN(10) == 0 {
				op = 0x9 // ping
			}
			stream = append(stream, wsFrame(op, sizes[rng.IntN(len(sizes))], rng.IntN(2) == 0)...)
			ends[len(stream)] = true
		}
		if rng.IntN(2) == 0 {
			stream = append(stream, closeFrame(CloseGoingAway, rng.IntN(2) == 0)...)
			closeAt = len(stream)
			ends[len(stream)] = true
		}
		var f frameScanner
		for pos := 0; pos < len(stream); {
			n := 1 + rng.IntN(3000)
			if n > len(stream)-pos {
				n = len(stream) - pos
			}
			chunk := stream[pos : pos+n]
			next := -1 // the first frame end inside chunk, as the scanner says
			if u := f.untilBoundary(chunk); u > 0 {
				next = pos + u
			}
			want := -1
			for i := pos + 1; i <= pos+n; i++ {
				if ends[i] {
					want = i
					break
				}
			}
			if !f.atBoundary() && next != want {
				t.Fatalf("round %d: at %d the frame under way ends at %d, scanner says %d", round, pos, want, next)
			}
			f.advance(chunk)
			pos += n
			if f.atBoundary() != ends[pos] {
				t.Fatalf("round %d: at %d atBoundary=%v, want %v", round, pos, f.atBoundary(), ends[pos])
			}
		}
		if f.closeSeen != (closeAt >= 0) {
			t.Fatalf("round %d: closeSeen=%v, want %v", round, f.closeSeen, closeAt >= 0)
		}
	}
}

// A close frame sent to the app is masked; one sent to the client is not; both carry 1001.
func TestCloseFrame(t *testing.T) {
	if got := closeFrame(1001, false); !bytes.Equal(got, []byte{0x88, 2, 0x03, 0xe9}) {
		t.Errorf("unmasked close frame % x", got)
	}
	m := closeFrame(1001, true)
	if len(m) != 8 || m[0] != 0x88 || m[1] != 0x82 {
		t.Fatalf("masked close frame % x", m)
	}
	if code := uint16(m[6]^m[2])<<8 | uint16(m[7]^m[3]); code != 1001 {
		t.Errorf("masked close frame carries %d", code)
	}
}
