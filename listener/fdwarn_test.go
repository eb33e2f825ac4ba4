package listener

import (
	"bytes"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// failingListener's Accept fails as accept(2) does without a free descriptor.
type failingListener struct{ net.Listener }

func (failingListener) Accept() (net.Conn, error) {
	return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
}

type lockedBuffer struct {
	mu sync.Mutex
	bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Buffer.Write(p)
}

// Issue 23, item 6: running out of descriptors on accept is logged at warning level,
// once per fdWarnEvery however often net/http retries, instead of only at debug level.
func TestOutOfDescriptorsOnAcceptWarnsRateLimited(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var out lockedBuffer
	log := hclog.New(&hclog.LoggerOptions{Output: &out, Level: hclog.Warn})
	w := WarnOutOfDescriptors(failingListener{ln}, log)
	for range 100 {
		w.Accept()
	}
	got := out.String()
	if n := strings.Count(got, "out of file descriptors"); n != 1 {
		t.Errorf("%d warnings for 100 failed accepts, want 1 (rate-limited):\n%s", n, got)
	}
	if !strings.Contains(got, "[WARN]") || !strings.Contains(got, ln.Addr().String()) {
		t.Errorf("the warning is not at warning level or does not name the address:\n%s", got)
	}
}
