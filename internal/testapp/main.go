// Command testapp is the app the supervision tests start under drainproxy. It serves the
// stand-in handler (package standin: /slow?d=2s and friends) on 127.0.0.1:$PORT and, by
// flags, misbehaves the ways legacy apps do:
//
//	-ignore-term         ignore SIGTERM (only SIGKILL stops it)
//	-exit-after 300ms    exit by itself after serving that long, with -exit-code
//	-exit-once FILE      ... but only on the first run: create FILE, and serve for good
//	                     on later runs (a crash that a restart cures)
//	-orphan 2s           leave behind a process that lives 2s after its parent exited
//	                     (a double fork); its pid is printed as "testapp: orphan pid N"
//	-no-listen           never listen (an app that does not start)
//	-no-listen-if FILE   ... when FILE exists (a new instance that never comes up)
//	-exit-if FILE        exit at once with -exit-code when FILE exists (a new instance
//	                     that dies at start)
//	-print TEXT          write TEXT to stdout at start ("\n" is a newline), and -eprint
//	                     to stderr: output passthrough tests
//	-stop-delay 1s       on SIGTERM, keep serving that long, then exit 0 (a graceful app)
//	-report-signals      print "testapp: got SIGUSR2" (and SIGUSR1, SIGWINCH) on stderr
//	-log-requests        print "testapp: request GET /slow?d=2s" on stderr as each arrives
//
// Besides the stand-in's routes it answers GET /pid with its process id, and POST / and
// POST /slow?d=2s as the stand-in answers GET (for clients that never retry, POST).
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/drainproxy/drainproxy/standin"
)

func main() {
	var (
		ignoreTerm bool
		exitAfter  time.Duration
		exitCode   int
		exitOnce   string
		orphan     time.Duration
		noListen   bool
		noListenIf string
		exitIf     string
		printOut   string
		eprint     string
		stopDelay  time.Duration
		report     bool
		logReqs    bool
		startDelay time.Duration
		spawn      time.Duration // internal: the middle process of the double fork
		sleep      time.Duration // internal: the orphan itself
	)
	flag.BoolVar(&ignoreTerm, "ignore-term", false, "ignore SIGTERM")
	flag.DurationVar(&exitAfter, "exit-after", 0, "exit by itself after this long")
	flag.IntVar(&exitCode, "exit-code", 3, "the code for -exit-after")
	flag.StringVar(&exitOnce, "exit-once", "", "exit only if this file does not exist yet (and create it)")
	flag.DurationVar(&orphan, "orphan", 0, "leave behind a process that lives this long")
	flag.BoolVar(&noListen, "no-listen", false, "never listen")
	flag.StringVar(&noListenIf, "no-listen-if", "", "never listen if this file exists")
	flag.StringVar(&exitIf, "exit-if", "", "exit at once with -exit-code if this file exists")
	flag.StringVar(&printOut, "print", "", "write this to stdout at start")
	flag.StringVar(&eprint, "eprint", "", "write this to stderr at start")
	flag.DurationVar(&stopDelay, "stop-delay", 0, "on SIGTERM, serve this long, then exit 0")
	flag.BoolVar(&report, "report-signals", false, "print the signals SIGUSR1, SIGUSR2 and SIGWINCH as they arrive")
	flag.BoolVar(&logReqs, "log-requests", false, "print each request as it arrives")
	flag.DurationVar(&startDelay, "start-delay", 0, "wait this long before listening (an app slow to start)")
	flag.DurationVar(&spawn, "spawn", 0, "internal")
	flag.DurationVar(&sleep, "sleep", 0, "internal")
	flag.Parse()

	switch {
	case sleep > 0:
		time.Sleep(sleep)
		return
	case spawn > 0:
		// Start the orphan and exit without waiting for it: it is re-parented to the
		// nearest subreaper (drainproxy) or init.
		cmd := exec.Command(os.Args[0], "-sleep", spawn.String())
		if err := cmd.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "testapp:", err)
			os.Exit(1)
		}
		fmt.Println(cmd.Process.Pid)
		return
	}

	if exitIf != "" {
		if _, err := os.Stat(exitIf); err == nil {
			fmt.Fprintf(os.Stderr, "testapp: %s exists, exiting with code %d\n", exitIf, exitCode)
			os.Exit(exitCode)
		}
	}
	if printOut != "" {
		os.Stdout.WriteString(strings.ReplaceAll(printOut, `\n`, "\n"))
	}
	if eprint != "" {
		os.Stderr.WriteString(strings.ReplaceAll(eprint, `\n`, "\n"))
	}
	if ignoreTerm {
		signal.Ignore(syscall.SIGTERM)
	}
	if report {
		ch := make(chan os.Signal, 4)
		signal.Notify(ch, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH)
		go func() {
			for sig := range ch {
				fmt.Fprintf(os.Stderr, "testapp: got %s\n", map[os.Signal]string{
					syscall.SIGUSR1: "SIGUSR1", syscall.SIGUSR2: "SIGUSR2", syscall.SIGWINCH: "SIGWINCH"}[sig])
			}
		}()
	}
	if stopDelay > 0 {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGTERM)
		go func() {
			<-ch
			fmt.Fprintln(os.Stderr, "testapp: SIGTERM, stopping in", stopDelay)
			time.Sleep(stopDelay)
			os.Exit(0)
		}()
	}
	if orphan > 0 {
		out, err := exec.Command(os.Args[0], "-spawn", orphan.String()).Output()
		if err != nil {
			fmt.Fprintln(os.Stderr, "testapp:", err)
			os.Exit(1)
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(string(out)))
		fmt.Fprintf(os.Stderr, "testapp: orphan pid %d\n", pid)
	}
	if exitOnce != "" {
		if _, err := os.Stat(exitOnce); err == nil {
			exitAfter = 0 // a later run: serve for good
		} else if err := os.WriteFile(exitOnce, nil, 0o600); err != nil {
			fmt.Fprintln(os.Stderr, "testapp:", err)
			os.Exit(1)
		}
	}
	if exitAfter > 0 {
		go func() {
			time.Sleep(exitAfter)
			fmt.Fprintf(os.Stderr, "testapp: exiting with code %d\n", exitCode)
			os.Exit(exitCode)
		}()
	}
	if noListenIf != "" {
		if _, err := os.Stat(noListenIf); err == nil {
			noListen = true
		}
	}
	if noListen {
		fmt.Fprintln(os.Stderr, "testapp: not listening")
		select {}
	}

	time.Sleep(startDelay)
	addr := net.JoinHostPort("127.0.0.1", os.Getenv("PORT"))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testapp:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "testapp: pid %d serving on %s\n", os.Getpid(), ln.Addr())
	h := withPid(standin.Handler())
	if logReqs {
		inner := h
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(os.Stderr, "testapp: request %s %s\n", r.Method, r.URL.RequestURI())
			inner.ServeHTTP(w, r)
		})
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintln(os.Stderr, "testapp:", srv.Serve(ln))
	os.Exit(1)
}

// withPid adds GET /pid, POST / and POST /slow to the stand-in's handler.
func withPid(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", h)
	mux.HandleFunc("GET /pid", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, os.Getpid())
	})
	mux.HandleFunc("POST /{$}", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, standin.Hello) })
	mux.HandleFunc("POST /slow", func(w http.ResponseWriter, r *http.Request) {
		d, _ := time.ParseDuration(r.URL.Query().Get("d"))
		select {
		case <-time.After(d):
			io.WriteString(w, standin.Hello)
		case <-r.Context().Done():
		}
	})
	return mux
}
