package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/hashicorp/go-hclog"

	"github.com/drainproxy/drainproxy/config"
	"github.com/drainproxy/drainproxy/drain"
	"github.com/drainproxy/drainproxy/listener"
	"github.com/drainproxy/drainproxy/proxy"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = "dev"

// Exit codes; the README lists them.
const (
	exitOK      = 0 // clean drain
	exitFailure = 1 // runtime failure, or a drain that was forced or aborted something
	exitUsage   = 2 // bad flags or configuration
)

// run is the whole program; main only maps it to the process. Canceling ctx starts a
// drain, as SIGTERM does.
func run(ctx context.Context, args []string, stderr io.Writer) int {
	cfg, err := config.Parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "drainproxy: %v\n", err)
		return exitUsage
	}
	if cfg.ShowVersion {
		fmt.Fprintf(stderr, "drainproxy %s\n", version)
		return exitOK
	}
	if len(cfg.Upstream.Command) > 0 {
		fmt.Fprintln(stderr, "drainproxy: running the app as a child (-- COMMAND or upstream.command) is not built yet; start the app yourself and give -upstream")
		return exitUsage
	}
	log := newLogger(cfg.Log, stderr)
	if cfg.CheckOnly {
		log.Info("configuration is valid", "source", cfg.Source)
		return exitOK
	}

	d := drain.New(drain.Options{
		Delay:        cfg.Drain.Delay,
		Grace:        cfg.Drain.Grace,
		IdleClose:    cfg.Drain.IdleClose,
		FlushTimeout: cfg.Drain.FlushTimeout,
		Logger:       log.Named("drain"),
	})
	// Trap signals before anything slow, so that a SIGTERM during start-up still drains.
	stopSignals := d.TrapSignals()
	defer stopSignals()

	p, err := proxy.New(proxy.Options{
		Upstream:              cfg.Upstream.URL,
		HostHeader:            cfg.Proxy.HostHeader,
		TrustedProxies:        cfg.Proxy.TrustedProxies,
		DialTimeout:           cfg.Upstream.DialTimeout,
		ResponseHeaderTimeout: cfg.Upstream.ResponseHeaderTimeout,
		IdleConns:             cfg.Upstream.IdleConns,
		IdleConnTimeout:       cfg.Upstream.IdleConnTimeout,
		MaxRequestBodyBytes:   cfg.Limits.MaxRequestBodyBytes,
		Logger:                log.Named("proxy"),
	})
	if err != nil {
		log.Error("cannot build the proxy", "error", err.Error())
		return exitUsage
	}
	defer p.CloseIdleConnections()

	handler := d.Handler(p)
	addrs := make([]string, 0, len(cfg.Listeners))
	for _, l := range cfg.Listeners {
		ln, err := listener.Listen(ctx, l.Address, cfg.Limits.MaxConnections)
		if err != nil {
			log.Error("cannot listen", "error", err.Error())
			return exitFailure
		}
		defer ln.Close()
		d.AddServer("public", newServer(handler, cfg.Limits, log), ln)
		addrs = append(addrs, ln.Addr().String())
	}

	log.Info("drainproxy starting", "version", version, "listen", strings.Join(addrs, ","),
		"upstream", p.Upstream(), "config", cfg.Source, "pid", os.Getpid())
	return d.Run(ctx).ExitCode()
}

// newServer builds the public HTTP server. Read-header and idle timeouts bound what a slow
// or silent client can hold; read and write timeouts stay off by default so that long
// uploads and long proxied responses (downloads, streams) work.
func newServer(h http.Handler, lim config.Limits, log hclog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: lim.ReadHeaderTimeout,
		ReadTimeout:       lim.ReadTimeout,
		WriteTimeout:      lim.WriteTimeout,
		IdleTimeout:       lim.IdleTimeout,
		MaxHeaderBytes:    lim.MaxHeaderBytes,
		ErrorLog: log.Named("http").StandardLogger(&hclog.StandardLoggerOptions{
			InferLevels: true, ForceLevel: hclog.Debug,
		}),
	}
}

// newLogger builds the root logger: text for a terminal, JSON for machines.
func newLogger(c config.Log, w io.Writer) hclog.Logger {
	jsonFormat := c.Format == "json" || (c.Format == "auto" && !isTerminal(w))
	return hclog.New(&hclog.LoggerOptions{
		Name:       "drainproxy",
		Level:      hclog.LevelFromString(c.Level),
		Output:     w,
		JSONFormat: jsonFormat,
	})
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
