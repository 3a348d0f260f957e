// Command vk-agent is the microVM guest's agent: it carries exec and port sessions
// between fleetd (vk_fargate/fleetd/agentmux.py) and the guest over one virtio-serial
// port, "vk.agent", the only channel a TCG guest without vhost-vsock has to its host.
//
// Framing (both ways): [u32 session][u32 length][payload], big-endian, 32 KiB at most
// per frame so that each is one write(2) of the port, which the kernel never splits.
// Session 0 is the link's: "H"+nonce from the host starts a new host (every session
// is dropped) and is echoed back; the host ignores everything before the echo. In a
// session, payload[0] is a v5 channel (vk_fargate/fleetd/streams.py) or one of:
//
//	0x80 OPEN (host)   JSON {"kind": "exec", "index", "command", "stdin", "tty"} or
//	                   {"kind": "port", "port"}
//	0x81 ACK  (both)   u32: bytes of data the reader consumed (flow control: each
//	                   side sends at most `window` unacknowledged data bytes)
//	0x82 END  (both)   host: kill the session; agent: the session is over
//
// Standard library only, built static (CGO_ENABLED=0) by vk_fargate/fleetd/guest.py.
package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

const (
	portName   = "vk.agent"
	headerSize = 8
	maxFrame   = 32 * 1024
	maxPayload = maxFrame - headerSize
	window     = 256 * 1024
	opOpen     = 0x80
	opAck      = 0x81
	opEnd      = 0x82
	chStdin    = 0
	chStdout   = 1
	chStderr   = 2
	chError    = 3
	chResize   = 4
	chClose    = 255
	runc       = "/usr/sbin/runc"
	runcRoot   = "/run/runc"
	workDir    = "/run/vk-agent" // not /run/vk, whose *.pid files are /init's containers
)

type frame struct {
	gen  int64
	data []byte
}

type agent struct {
	fd       int
	gen      atomic.Int64
	out      chan frame
	mu       sync.Mutex
	sessions map[uint32]*session
	serial   atomic.Int64
}

type openMsg struct {
	Kind    string   `json:"kind"`
	Index   int      `json:"index"`
	Command []string `json:"command"`
	Stdin   bool     `json:"stdin"`
	TTY     bool     `json:"tty"`
	Port    int      `json:"port"`
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("vk-agent: ")
	if err := os.MkdirAll(workDir, 0o700); err != nil {
		log.Fatalf("mkdir %s: %v", workDir, err)
	}
	path := findPort()
	fd, err := syscall.Open(path, syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		log.Fatalf("open %s: %v", path, err)
	}
	a := &agent{fd: fd, out: make(chan frame, 256), sessions: map[uint32]*session{}}
	go a.writer()
	a.reader()
}

// findPort waits for the kernel to name the port: /dev/vportNpM, named in sysfs.
func findPort() string {
	for logged := false; ; logged = true {
		names, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
		for _, name := range names {
			if text, err := os.ReadFile(name); err == nil && strings.TrimSpace(string(text)) == portName {
				return "/dev/" + filepath.Base(filepath.Dir(name))
			}
		}
		if !logged {
			log.Printf("waiting for the virtio port %s", portName)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (a *agent) writer() {
	for f := range a.out {
		if f.gen != a.gen.Load() {
			continue // a session of a host that went away
		}
		for data := f.data; len(data) > 0; {
			n, err := syscall.Write(a.fd, data)
			if err == syscall.EINTR || err == syscall.EAGAIN {
				continue
			}
			if err != nil {
				log.Printf("write: %v", err)
				time.Sleep(100 * time.Millisecond)
				break
			}
			data = data[n:]
		}
	}
}

func (a *agent) send(gen int64, id uint32, op byte, payload []byte) {
	data := make([]byte, headerSize+1+len(payload))
	binary.BigEndian.PutUint32(data[0:], id)
	binary.BigEndian.PutUint32(data[4:], uint32(1+len(payload)))
	data[headerSize] = op
	copy(data[headerSize+1:], payload)
	a.out <- frame{gen, data}
}

func (a *agent) reader() {
	buf := make([]byte, 64*1024)
	var pending []byte
	for {
		n, err := syscall.Read(a.fd, buf)
		if err == syscall.EINTR || err == syscall.EAGAIN {
			continue
		}
		if n <= 0 { // the host is not connected (or went away): drop its sessions
			if len(pending) > 0 || a.count() > 0 {
				log.Printf("the host went away: dropping its sessions")
			}
			pending = nil
			a.reset()
			time.Sleep(100 * time.Millisecond)
			continue
		}
		pending = append(pending, buf[:n]...)
		for len(pending) >= headerSize {
			id := binary.BigEndian.Uint32(pending)
			size := int(binary.BigEndian.Uint32(pending[4:]))
			if size > maxPayload {
				log.Printf("a frame of %d bytes: dropping what the host sent", size)
				pending = nil
				break
			}
			if len(pending) < headerSize+size {
				break
			}
			payload := append([]byte(nil), pending[headerSize:headerSize+size]...)
			pending = pending[headerSize+size:]
			a.dispatch(id, payload)
		}
	}
}

func (a *agent) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.sessions)
}

// reset drops every session (its process killed, its connection closed).
func (a *agent) reset() {
	a.mu.Lock()
	old := a.sessions
	a.sessions = map[uint32]*session{}
	a.gen.Add(1)
	a.mu.Unlock()
	for _, s := range old {
		s.kill()
	}
}

func (a *agent) dispatch(id uint32, payload []byte) {
	if len(payload) == 0 {
		return
	}
	if id == 0 {
		if payload[0] == 'H' {
			a.reset()
			a.send(a.gen.Load(), 0, 'H', payload[1:])
		}
		return
	}
	op, body := payload[0], payload[1:]
	a.mu.Lock()
	s := a.sessions[id]
	if op == opOpen {
		if s != nil {
			a.mu.Unlock()
			return // opened already
		}
		s = newSession(a, id, a.gen.Load())
		a.sessions[id] = s
	}
	a.mu.Unlock()
	if s == nil {
		return
	}
	switch op {
	case opOpen:
		var o openMsg
		if err := json.Unmarshal(body, &o); err != nil {
			s.fail("bad open message: " + err.Error())
			return
		}
		go s.run(o)
	case opAck:
		if len(body) == 4 {
			s.credited(int(binary.BigEndian.Uint32(body)))
		}
	case opEnd:
		a.forget(s)
		s.kill()
	case chStdin:
		s.input(body, false)
	case chClose:
		s.input(nil, true)
	case chResize:
		var size struct{ Width, Height uint16 }
		if json.Unmarshal(body, &size) == nil {
			s.resize(size.Height, size.Width)
		}
	}
}

func (a *agent) forget(s *session) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sessions[s.id] == s {
		delete(a.sessions, s.id)
	}
}

type session struct {
	a      *agent
	id     uint32
	gen    int64
	mu     sync.Mutex
	cond   *sync.Cond
	credit int
	inq    [][]byte
	eof    bool
	killed bool
	rows   uint16
	cols   uint16
	master *os.File
	cmd    *exec.Cmd
	pidf   string
	conn   net.Conn
}

func newSession(a *agent, id uint32, gen int64) *session {
	s := &session{a: a, id: id, gen: gen, credit: window}
	s.cond = sync.NewCond(&s.mu)
	return s
}

func (s *session) send(op byte, payload []byte) { s.a.send(s.gen, s.id, op, payload) }

func (s *session) end() {
	s.send(opEnd, nil)
	s.a.forget(s)
}

func (s *session) fail(message string) {
	text, _ := json.Marshal(map[string]string{"error": message})
	s.send(chError, text)
	s.end()
}

func (s *session) credited(n int) {
	s.mu.Lock()
	s.credit += n
	s.cond.Broadcast()
	s.mu.Unlock()
}

func (s *session) input(data []byte, eof bool) {
	s.mu.Lock()
	if eof {
		s.eof = true
	} else {
		s.inq = append(s.inq, data)
	}
	s.cond.Broadcast()
	s.mu.Unlock()
}

func (s *session) resize(rows, cols uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rows, s.cols = rows, cols
	if s.master != nil {
		setSize(s.master, rows, cols)
		if s.cmd != nil && s.cmd.Process != nil {
			_ = s.cmd.Process.Signal(syscall.SIGWINCH) // runc copies the size inward
		}
	}
}

// kill ends the session's process (the command, found by runc's pid file, then runc)
// or connection; the pumps then end by themselves.
func (s *session) kill() {
	s.mu.Lock()
	s.killed = true
	s.cond.Broadcast()
	cmd, pidf, conn := s.cmd, s.pidf, s.conn
	s.mu.Unlock()
	if conn != nil {
		conn.Close()
	}
	if cmd != nil && cmd.Process != nil {
		go func() {
			for i := 0; i < 50 && cmd.ProcessState == nil; i++ {
				if text, err := os.ReadFile(pidf); err == nil {
					if pid, err := strconv.Atoi(strings.TrimSpace(string(text))); err == nil {
						_ = syscall.Kill(pid, syscall.SIGKILL)
						break
					}
				}
				time.Sleep(100 * time.Millisecond)
			}
			_ = cmd.Process.Kill()
		}()
	}
}

// pumpIn hands the host's data to w, acknowledging each piece once written; at EOF
// it calls done (close stdin, half-close the connection).
func (s *session) pumpIn(w io.Writer, done func()) {
	for {
		s.mu.Lock()
		for len(s.inq) == 0 && !s.eof && !s.killed {
			s.cond.Wait()
		}
		if s.killed {
			s.mu.Unlock()
			return
		}
		if len(s.inq) == 0 { // eof
			s.mu.Unlock()
			done()
			return
		}
		data := s.inq[0]
		s.inq = s.inq[1:]
		s.mu.Unlock()
		if _, err := w.Write(data); err != nil {
			done()
			s.drain()
			return
		}
		ack := make([]byte, 4)
		binary.BigEndian.PutUint32(ack, uint32(len(data)))
		s.send(opAck, ack)
	}
}

// drain acknowledges (and drops) what the host still sends once the reader is gone,
// so that the host never waits for credit forever.
func (s *session) drain() {
	for {
		s.mu.Lock()
		for len(s.inq) == 0 && !s.eof && !s.killed {
			s.cond.Wait()
		}
		queued := s.inq
		s.inq = nil
		stop := s.eof || s.killed
		s.mu.Unlock()
		for _, data := range queued {
			ack := make([]byte, 4)
			binary.BigEndian.PutUint32(ack, uint32(len(data)))
			s.send(opAck, ack)
		}
		if stop {
			return
		}
	}
}

// pumpOut sends what r yields on channel ch, within the host's credit.
// gate holds an exec's output until runc has written the pid file, i.e. until the
// command runs: what comes before is runc's own error (a missing command), which ends
// the session as its ERROR rather than as the command's output, as the kubelet's.
type gate struct {
	mu   sync.Mutex
	pidf string
	open bool
	held []frame // gen unused: the channel and data
	size int
}

const gateHeld = 64 * 1024 // output held at most: past it the command surely runs

func (g *gate) pass(s *session, ch byte, data []byte) {
	if g == nil {
		s.send(ch, data)
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.open {
		if _, err := os.Stat(g.pidf); err == nil || g.size+len(data) > gateHeld {
			g.flushLocked(s)
		}
	}
	if g.open {
		s.send(ch, data)
		return
	}
	g.held = append(g.held, frame{int64(ch), append([]byte(nil), data...)})
	g.size += len(data)
}

// flush sends what is held (keep) or drops it (runc failed: it was runc's message).
func (g *gate) flush(s *session, keep bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !keep {
		g.held = nil
	}
	g.flushLocked(s)
}

func (g *gate) flushLocked(s *session) {
	g.open = true
	for _, f := range g.held {
		s.send(byte(f.gen), f.data)
	}
	g.held = nil
}

func (s *session) pumpOut(r io.Reader, ch byte, g *gate) {
	buf := make([]byte, maxPayload-1)
	for {
		s.mu.Lock()
		for s.credit <= 0 && !s.killed {
			s.cond.Wait()
		}
		n := min(s.credit, len(buf))
		killed := s.killed
		s.mu.Unlock()
		if killed {
			return
		}
		got, err := r.Read(buf[:n])
		if got > 0 {
			s.mu.Lock()
			s.credit -= got
			s.mu.Unlock()
			g.pass(s, ch, buf[:got])
		}
		if err != nil {
			return
		}
	}
}

func (s *session) run(o openMsg) {
	switch o.Kind {
	case "exec":
		s.exec(o)
	case "port":
		s.port(o.Port)
	default:
		s.fail(fmt.Sprintf("unknown session kind %q", o.Kind))
	}
}

func (s *session) port(port int) {
	conn, err := net.DialTimeout("tcp4", fmt.Sprintf("127.0.0.1:%d", port), 10*time.Second)
	if err != nil {
		s.fail(fmt.Sprintf("failed to connect to localhost:%d inside the microVM: %v", port, err))
		return
	}
	s.mu.Lock()
	s.conn = conn
	killed := s.killed
	s.mu.Unlock()
	if killed {
		conn.Close()
		return
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.pumpIn(conn, func() { _ = conn.(*net.TCPConn).CloseWrite() })
	}()
	s.pumpOut(conn, chStdout, nil)
	s.send(chClose, []byte{1})
	wg.Wait()
	conn.Close()
	s.end()
}

func (s *session) exec(o openMsg) {
	if len(o.Command) == 0 {
		s.fail("no command given")
		return
	}
	// /init reports a container started just before runc creates it: give runc the
	// moment it needs rather than fail an exec that follows the start.
	state := fmt.Sprintf("%s/vk%d/state.json", runcRoot, o.Index)
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(state); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	serial := s.a.serial.Add(1)
	logf := fmt.Sprintf("%s/exec-%d.log", workDir, serial)
	s.pidf = fmt.Sprintf("%s/exec-%d.pid", workDir, serial)
	defer os.Remove(logf)
	defer os.Remove(s.pidf)
	args := []string{"--root", runcRoot, "--log", logf, "--log-format", "json", "exec", "--pid-file", s.pidf}
	if o.TTY {
		args = append(args, "--tty")
	}
	args = append(args, fmt.Sprintf("vk%d", o.Index))
	cmd := exec.Command(runc, append(args, o.Command...)...)
	var outputs []io.Reader
	var stdin io.WriteCloser
	var slave *os.File
	if o.TTY {
		master, pts, err := openPty()
		if err != nil {
			s.fail("allocate a terminal: " + err.Error())
			return
		}
		defer master.Close()
		slave = pts
		s.mu.Lock()
		s.master = master
		if s.rows > 0 || s.cols > 0 {
			setSize(master, s.rows, s.cols)
		}
		s.mu.Unlock()
		cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, pts, pts
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
		outputs = []io.Reader{eioIsEOF{master}}
		stdin = master
	} else {
		out, err1 := cmd.StdoutPipe()
		errs, err2 := cmd.StderrPipe()
		if err := errors.Join(err1, err2); err != nil {
			s.fail(err.Error())
			return
		}
		outputs = []io.Reader{out, errs}
		if o.Stdin {
			if stdin, err1 = cmd.StdinPipe(); err1 != nil {
				s.fail(err1.Error())
				return
			}
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	}
	s.mu.Lock()
	killed := s.killed
	var err error
	if !killed {
		err = cmd.Start()
		if err == nil {
			s.cmd = cmd
		}
	}
	s.mu.Unlock()
	if slave != nil {
		slave.Close()
	}
	if killed {
		s.end()
		return
	}
	if err != nil {
		s.fail("start runc: " + err.Error())
		return
	}
	if o.Stdin && stdin != nil {
		done := func() { _ = stdin.Close() }
		if o.TTY {
			done = func() { _, _ = stdin.Write([]byte{4}) } // ^D: EOF at the terminal
		}
		go s.pumpIn(stdin, done)
	}
	g := &gate{pidf: s.pidf}
	var wg sync.WaitGroup
	for i, r := range outputs {
		wg.Add(1)
		go func(r io.Reader, ch byte) {
			defer wg.Done()
			s.pumpOut(r, ch, g)
		}(r, byte(chStdout+i))
	}
	wg.Wait()
	err = cmd.Wait()
	s.mu.Lock()
	s.killed = true // the stdin pump ends
	s.cond.Broadcast()
	s.mu.Unlock()
	code := cmd.ProcessState.ExitCode()
	if code < 0 {
		code = 128 + int(cmd.ProcessState.Sys().(syscall.WaitStatus).Signal())
	}
	if code != 0 {
		if message := runcError(logf); message != "" {
			g.flush(s, false)
			s.fail("OCI runtime exec failed: " + message)
			return
		}
	}
	g.flush(s, true)
	text, _ := json.Marshal(map[string]int{"exit_code": code})
	s.send(chError, text)
	s.end()
}

// runcError is the last error runc logged (JSON lines), e.g. a command not found.
func runcError(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	message := ""
	lines := bufio.NewScanner(f)
	for lines.Scan() {
		var entry struct{ Level, Msg string }
		if json.Unmarshal(lines.Bytes(), &entry) == nil && entry.Level == "error" {
			message = entry.Msg
		}
	}
	return message
}

type eioIsEOF struct{ f *os.File }

func (r eioIsEOF) Read(p []byte) (int, error) {
	n, err := r.f.Read(p)
	if err != nil && errors.Is(err, syscall.EIO) {
		err = io.EOF // the terminal's last other end closed
	}
	return n, err
}

func ioctl(fd uintptr, request uintptr, arg unsafe.Pointer) error {
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, request, uintptr(arg)); errno != 0 {
		return errno
	}
	return nil
}

// openPty allocates a terminal pair (runc in the foreground with --tty needs a
// terminal among its stdio to copy the container's console to).
func openPty() (*os.File, *os.File, error) {
	fd, err := syscall.Open("/dev/ptmx", syscall.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	master := os.NewFile(uintptr(fd), "/dev/ptmx")
	var unlock int32
	var number uint32
	if err := ioctl(uintptr(fd), syscall.TIOCSPTLCK, unsafe.Pointer(&unlock)); err != nil {
		master.Close()
		return nil, nil, err
	}
	if err := ioctl(uintptr(fd), syscall.TIOCGPTN, unsafe.Pointer(&number)); err != nil {
		master.Close()
		return nil, nil, err
	}
	name := fmt.Sprintf("/dev/pts/%d", number)
	sfd, err := syscall.Open(name, syscall.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		master.Close()
		return nil, nil, err
	}
	return master, os.NewFile(uintptr(sfd), name), nil
}

func setSize(f *os.File, rows, cols uint16) {
	size := [4]uint16{rows, cols, 0, 0}
	fd := f.Fd()
	_ = ioctl(fd, syscall.TIOCSWINSZ, unsafe.Pointer(&size))
}
