package supervise

import (
	"bufio"
	"errors"
	"io"
	"os"
)

// maxLine is the longest line the prefixer holds back; a longer one is written in pieces
// (the prefix only before the first), so a child that never writes a newline cannot make
// drainproxy buffer without bound.
const maxLine = 64 << 10

// copyLines copies r to w line by line, each line written with one Write and preceded by
// prefix, so that the app's lines never interleave mid-line with drainproxy's own log
// lines on the same stream. A last line without a newline is written when r ends, with
// a newline added, so that nothing the app wrote is lost.
func copyLines(w io.Writer, r io.Reader, prefix string) {
	br := bufio.NewReaderSize(r, maxLine)
	buf := make([]byte, 0, maxLine+len(prefix)+1)
	atLineStart := true
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			buf = buf[:0]
			if atLineStart {
				buf = append(buf, prefix...)
			}
			buf = append(buf, chunk...)
			atLineStart = chunk[len(chunk)-1] == '\n'
			if !atLineStart && err != nil && !errors.Is(err, bufio.ErrBufferFull) {
				buf = append(buf, '\n') // the app's last, unterminated line
				atLineStart = true
			}
			w.Write(buf) // a failing destination must not block the app: keep draining r
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// outputPipe is where one of the child's output streams goes.
type outputPipe struct {
	childEnd *os.File // given to the child; closed here once the child has it
	ours     *os.File // the reading end, when copying; nil when the child writes directly
	done     chan struct{}
}

// newOutput gives the child dst directly when dst is a file and no prefix is needed (its
// output then reaches the terminal or log collector unchanged, even if drainproxy dies),
// and otherwise a pipe whose lines are copied to dst with the prefix.
func newOutput(dst io.Writer, prefix string) (*outputPipe, error) {
	if f, ok := dst.(*os.File); ok && prefix == "" {
		return &outputPipe{childEnd: f}, nil
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	o := &outputPipe{childEnd: w, ours: r, done: make(chan struct{})}
	go func() {
		defer close(o.done)
		copyLines(dst, r, prefix)
	}()
	return o, nil
}

// started closes this process's copy of the child's end, so that the copy ends when the
// child (and whatever inherited the stream from it) has closed it.
func (o *outputPipe) started() {
	if o.ours != nil {
		o.childEnd.Close()
	}
}

// wait waits for the copy to reach the end of the stream, or until stop is closed (a
// process the app left behind may hold the stream open); then it closes the pipe.
func (o *outputPipe) wait(stop <-chan struct{}) {
	if o.ours == nil {
		return
	}
	select {
	case <-o.done:
	case <-stop:
		o.ours.Close() // ends the copy's read
		<-o.done
	}
	o.ours.Close()
}
