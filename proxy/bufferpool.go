package proxy

import "sync"

// copyBufferSize is the size of the buffers that carry response bodies from the upstream to
// the client, the same as io.Copy's.
const copyBufferSize = 32 << 10

// bufferPool is an httputil.BufferPool that reuses copy buffers across requests instead of
// allocating 32 KiB for every response. It pools array pointers, so Put does not allocate.
type bufferPool struct{ pool sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{pool: sync.Pool{New: func() any { return new([copyBufferSize]byte) }}}
}

func (b *bufferPool) Get() []byte { return b.pool.Get().(*[copyBufferSize]byte)[:] }

func (b *bufferPool) Put(buf []byte) {
	if len(buf) == copyBufferSize {
		b.pool.Put((*[copyBufferSize]byte)(buf))
	}
}
