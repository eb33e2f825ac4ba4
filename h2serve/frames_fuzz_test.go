package h2serve

import (
	"bytes"
	"encoding/binary"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// seedFrames are frame sequences written by x/net/http2's own Framer: CONTINUATION,
// padding, frames of 16 KiB and more, and the frames the scanner captures data of.
func seedFrames(t testing.TB) [][]byte {
	var seeds [][]byte
	add := func(write func(fr *http2.Framer) error) {
		var buf bytes.Buffer
		fr := http2.NewFramer(&buf, nil)
		if err := write(fr); err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, buf.Bytes())
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	enc.WriteField(hpack.HeaderField{Name: ":method", Value: "GET"})
	enc.WriteField(hpack.HeaderField{Name: ":path", Value: "/a/rather/long/path/for/splitting"})
	enc.WriteField(hpack.HeaderField{Name: "x-big", Value: string(bytes.Repeat([]byte("v"), 300))})
	block := hb.Bytes()
	add(func(fr *http2.Framer) error {
		if err := fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20}); err != nil {
			return err
		}
		if err := fr.WriteSettingsAck(); err != nil {
			return err
		}
		// HEADERS without END_HEADERS, then two CONTINUATIONs.
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:10], EndStream: true}); err != nil {
			return err
		}
		if err := fr.WriteContinuation(1, false, block[10:100]); err != nil {
			return err
		}
		return fr.WriteContinuation(1, true, block[100:])
	})
	add(func(fr *http2.Framer) error {
		// Padded HEADERS with priority, padded DATA, a DATA frame of 16 KiB + 1 and one of 20 KiB.
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block, EndHeaders: true,
			PadLength: 17, Priority: http2.PriorityParam{StreamDep: 1, Weight: 9}}); err != nil {
			return err
		}
		if err := fr.WriteDataPadded(3, false, []byte("hello"), bytes.Repeat([]byte{0}, 200)); err != nil {
			return err
		}
		if err := fr.WriteData(3, false, bytes.Repeat([]byte("d"), 16<<10+1)); err != nil {
			return err
		}
		return fr.WriteData(3, true, bytes.Repeat([]byte("e"), 20<<10))
	})
	add(func(fr *http2.Framer) error {
		if err := fr.WritePing(false, [8]byte{1, 2, 3, 4, 5, 6, 7, 8}); err != nil {
			return err
		}
		if err := fr.WritePing(true, [8]byte{8, 7, 6, 5, 4, 3, 2, 1}); err != nil {
			return err
		}
		if err := fr.WriteWindowUpdate(0, 1000); err != nil {
			return err
		}
		if err := fr.WriteRSTStream(5, http2.ErrCodeCancel); err != nil {
			return err
		}
		if err := fr.WritePriority(7, http2.PriorityParam{StreamDep: 5, Weight: 1}); err != nil {
			return err
		}
		if err := fr.WriteRawFrame(0xfa, 0xff, 9, []byte("unknown type")); err != nil {
			return err
		}
		return fr.WriteGoAway(0x7fffffff, http2.ErrCodeNo, []byte("debug data"))
	})
	return seeds
}

// FuzzFrameScanner is the scanner against x/net/http2's Framer, the oracle: the same bytes,
// handed to the scanner in pieces of every size, must give the same frames (type, flags,
// stream, a GOAWAY's last stream id, a PING's data), each ending where the Framer's ends,
// for as long as the Framer accepts the bytes. Deliberate differences: the scanner checks
// nothing (lengths, padding, frame order, the frame size limit); the x/net server it sits
// beside ends a connection whose frames the Framer refuses, so what follows a refused frame
// is not compared.
func FuzzFrameScanner(f *testing.F) {
	for _, s := range seedFrames(f) {
		for _, step := range []uint16{1, 7, 9, 4096, 65535} {
			f.Add(s, step)
		}
	}
	f.Fuzz(func(t *testing.T, in []byte, step uint16) {
		type seen struct {
			top frameTop
			end int // offset just past the frame
		}
		// The scanner, fed pieces of step+1 bytes (every read of a connection is a piece).
		var got []seen
		var sc frameScanner
		off := 0
		for off < len(in) {
			piece := in[off:min(len(in), off+int(step)+1)]
			for len(piece) > 0 {
				var tops []frameTop
				n := sc.advance(piece, func(f frameTop) { tops = append(tops, f) })
				if n == 0 {
					t.Fatalf("advance passed no byte of %d at offset %d", len(piece), off)
				}
				piece = piece[n:]
				off += n
				if len(tops) > 1 {
					t.Fatalf("advance reported %d frames in one call", len(tops))
				}
				for _, f := range tops {
					got = append(got, seen{top: f, end: -1})
				}
				if sc.atBoundary() && len(got) > 0 && got[len(got)-1].end == -1 {
					got[len(got)-1].end = off
				}
			}
		}

		// The oracle.
		r := bytes.NewReader(in)
		fr := http2.NewFramer(nil, r)
		fr.SetMaxReadFrameSize(1<<24 - 1)
		prevEnd := 0
		for i := 0; ; i++ {
			frame, err := fr.ReadFrame()
			if err != nil {
				// Input that ends inside a frame: the scanner reports the frame once its
				// header is in, and must not have ended it. (The Framer also says
				// ErrUnexpectedEOF for a payload too short for its flags: a refusal.)
				rest := in[prevEnd:]
				incomplete := len(rest) > 0 && (len(rest) < 9 || len(rest) < 9+(int(rest[0])<<16|int(rest[1])<<8|int(rest[2])))
				if incomplete && i < len(got) && got[i].end != -1 {
					t.Fatalf("frame %d: the input ends inside it, the scanner ended it at %d", i, got[i].end)
				}
				return
			}
			h := frame.Header()
			end := len(in) - r.Len()
			prevEnd = end
			if i >= len(got) {
				t.Fatalf("frame %d (%v, %d bytes): the scanner did not report it", i, h, h.Length)
			}
			g := got[i]
			if g.top.typ != h.Type || g.top.flags != h.Flags || g.top.streamID != h.StreamID {
				t.Fatalf("frame %d: scanner %v flags %#x stream %d, Framer %v", i, g.top.typ, g.top.flags, g.top.streamID, h)
			}
			if g.end != end {
				t.Fatalf("frame %d (%v): the scanner ended it at %d, the Framer at %d", i, h, g.end, end)
			}
			switch fv := frame.(type) {
			case *http2.GoAwayFrame:
				if last := binary.BigEndian.Uint32(g.top.data[:4]) & maxStreamID; last != fv.LastStreamID {
					t.Fatalf("frame %d: GOAWAY last stream %d, Framer %d", i, last, fv.LastStreamID)
				}
			case *http2.PingFrame:
				if g.top.data != fv.Data {
					t.Fatalf("frame %d: PING data %x, Framer %x", i, g.top.data, fv.Data)
				}
			}
		}
	})
}
