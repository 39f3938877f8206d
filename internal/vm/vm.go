// Package vm boots a Debian kernel package in qemu (software emulation) with the host's root
// file system shared read-only over 9p, under a writable overlay, and runs a shell script there.
// tests/kernels runs the datapath and the netns tests on older kernels with it.
//
// A guest sees the host's files as they are (its binaries, the test binaries built on the host,
// iproute2, the kernel's modules from the unpacked package), writes into memory, and reports
// through its serial console: the script's output, then a line with its exit status.
package vm

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Kernel is a Debian kernel package to boot.
type Kernel struct {
	// Name is the kernel's short name in test names and the README's table ("6.1").
	Name string
	// Suite is the Debian release that packages it ("bookworm").
	Suite string
	// Mirror is the archive ("http://deb.debian.org/debian").
	Mirror string
	// Extra are further sources of the suite's packages, as "URI suite" (its updates and
	// security archives, where its current kernel comes from).
	Extra []string
	// Meta is the metapackage that depends on the current kernel of the suite
	// ("linux-image-amd64").
	Meta string
	// Missing are the datapath features (internal/datapath's FeatureList names) this kernel
	// lacks: the guest's tests expect exactly these off.
	Missing []string
	// Unsupported, when set, is why mptcpgo does not run on this kernel: the error the
	// datapath's load fails with there, which the matrix checks.
	Unsupported string
}

// Kernels are the kernels the tests boot, newest first. The README's kernel table states the
// same (tests/kernels checks that it does).
var Kernels = []Kernel{
	{Name: "6.1", Suite: "bookworm", Mirror: "http://deb.debian.org/debian", Meta: "linux-image-amd64",
		Extra:   []string{"http://deb.debian.org/debian bookworm-updates", "http://deb.debian.org/debian-security bookworm-security"},
		Missing: []string{"struct_ops_link", "tcx", "tcp_rto_max_ms"}},
	{Name: "5.10", Suite: "bullseye", Mirror: "http://deb.debian.org/debian", Meta: "linux-image-amd64",
		Extra:       []string{"http://deb.debian.org/debian bullseye-updates", "http://deb.debian.org/debian-security bullseye-security"},
		Unsupported: `kfunc "cubictcp_cong_avoid": not supported`},
}

// Lookup returns the kernel of that name.
func Lookup(name string) (Kernel, bool) {
	for _, k := range Kernels {
		if k.Name == name {
			return k, true
		}
	}
	return Kernel{}, false
}

// Packages are the Debian packages a boot needs on the host.
var Packages = []string{"qemu-system-x86", "busybox-static", "kmod"}

// DefaultCache is where kernels are downloaded and unpacked unless MPTCPGO_KERNEL_CACHE says
// otherwise: outside the checkout, kept between runs.
const DefaultCache = "/var/cache/mptcpgo-kernels"

// Cache returns the cache directory in use.
func Cache() string {
	if d := os.Getenv("MPTCPGO_KERNEL_CACHE"); d != "" {
		return d
	}
	return DefaultCache
}

// Image is an unpacked kernel ready to boot.
type Image struct {
	Kernel  Kernel
	Release string // uname -r, e.g. 6.1.0-57-amd64
	Version string // the package's version, e.g. 6.1.192-3
	Vmlinuz string
	Modules string // directory holding lib/modules/<Release>
	Initrd  string
}

// Missing returns the host's missing commands a boot needs, as Debian packages.
func Missing() []string {
	var out []string
	for _, c := range []struct{ pkg, cmd string }{{"qemu-system-x86", "qemu-system-x86_64"}, {"kmod", "depmod"}} {
		if _, err := exec.LookPath(c.cmd); err != nil {
			out = append(out, c.pkg)
		}
	}
	if _, err := os.Stat(busybox); err != nil {
		out = append(out, "busybox-static")
	}
	return out
}

const busybox = "/bin/busybox"

// fetchMu serializes fetches: they share the apt state and the unpacked trees.
var fetchMu sync.Mutex

// Fetch downloads the suite's current kernel package (with apt, through a private apt state
// in the cache, so the host's sources and lists are left alone), unpacks it, indexes its
// modules and builds the initramfs. What is already in the cache is reused.
func Fetch(ctx context.Context, k Kernel) (*Image, error) {
	fetchMu.Lock()
	defer fetchMu.Unlock()
	if m := Missing(); len(m) > 0 {
		return nil, fmt.Errorf("missing Debian packages: %s", strings.Join(m, " "))
	}
	dir := filepath.Join(Cache(), k.Suite)
	a := aptState{dir: filepath.Join(dir, "apt"), k: k}
	pkg, version, err := a.resolve(ctx)
	if err != nil {
		return nil, err
	}
	img := &Image{Kernel: k, Version: version, Release: strings.TrimPrefix(pkg, "linux-image-")}
	img.Modules = filepath.Join(dir, pkg+"_"+version)
	img.Vmlinuz = filepath.Join(img.Modules, "boot", "vmlinuz-"+img.Release)
	// The initramfs is named after what goes into it besides the kernel's modules, so that a
	// changed init script is not booted from an old one.
	sum := sha256.Sum256(append(append([]byte(nil), initScript...), strings.Join(bootModules, " ")...))
	img.Initrd = filepath.Join(img.Modules, fmt.Sprintf("initrd-%x.gz", sum[:6]))
	if _, err := os.Stat(img.Vmlinuz); err != nil {
		deb, err := a.download(ctx, pkg, version)
		if err != nil {
			return nil, err
		}
		tmp := img.Modules + ".tmp"
		os.RemoveAll(tmp)
		if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", deb, tmp).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("unpack %s: %v: %s", deb, err, out)
		}
		if out, err := exec.CommandContext(ctx, "depmod", "-b", tmp, img.Release).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("depmod %s: %v: %s", img.Release, err, out)
		}
		os.RemoveAll(img.Modules)
		if err := os.Rename(tmp, img.Modules); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(img.Initrd); err != nil {
		if err := writeInitrd(img.Initrd, filepath.Join(img.Modules, "lib", "modules", img.Release)); err != nil {
			return nil, err
		}
	}
	return img, nil
}

// sameFile reports whether the file at path holds s.
func sameFile(path, s string) bool {
	b, err := os.ReadFile(path)
	return err == nil && string(b) == s
}

// aptState is a private apt configuration for one suite.
type aptState struct {
	dir string
	k   Kernel
}

func (a aptState) args(rest ...string) []string {
	return append([]string{
		"-q", "-o", "Dir::Etc::SourceList=" + filepath.Join(a.dir, "sources.list"),
		"-o", "Dir::Etc::SourceParts=/nonexistent",
		"-o", "Dir::State=" + filepath.Join(a.dir, "state"),
		"-o", "Dir::Cache=" + filepath.Join(a.dir, "cache"),
		"-o", "APT::Architecture=amd64",
		"-o", "Debug::NoLocking=1",
	}, rest...)
}

// resolve updates the suite's package lists (at most once a day) and returns the kernel
// package the metapackage depends on, and its version.
func (a aptState) resolve(ctx context.Context) (pkg, version string, err error) {
	for _, d := range []string{"state/lists/partial", "cache/archives/partial"} {
		if err := os.MkdirAll(filepath.Join(a.dir, d), 0o755); err != nil {
			return "", "", err
		}
	}
	const key = "[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]"
	src := fmt.Sprintf("deb %s %s %s main\n", key, a.k.Mirror, a.k.Suite)
	for _, e := range a.k.Extra {
		src += fmt.Sprintf("deb %s %s main\n", key, e)
	}
	if err := os.WriteFile(filepath.Join(a.dir, "sources.list"), []byte(src), 0o644); err != nil {
		return "", "", err
	}
	// The lists are renewed once a day, or when the sources changed.
	stamp := filepath.Join(a.dir, "updated")
	if st, err := os.Stat(stamp); err != nil || time.Since(st.ModTime()) > 24*time.Hour || !sameFile(stamp, src) {
		if out, err := exec.CommandContext(ctx, "apt-get", a.args("update")...).CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("apt-get update (%s): %v: %s", a.k.Suite, err, out)
		}
		os.WriteFile(stamp, []byte(src), 0o644)
	}
	pol, err := exec.CommandContext(ctx, "apt-cache", a.args("policy", a.k.Meta)...).Output()
	if err != nil {
		return "", "", fmt.Errorf("apt-cache policy %s (%s): %w", a.k.Meta, a.k.Suite, err)
	}
	cand := regexp.MustCompile(`(?m)^\s*Candidate: (\S+)`).FindSubmatch(pol)
	if cand == nil || string(cand[1]) == "(none)" {
		return "", "", fmt.Errorf("%s (%s): no candidate version:\n%s", a.k.Meta, a.k.Suite, pol)
	}
	out, err := exec.CommandContext(ctx, "apt-cache", a.args("show", a.k.Meta+"="+string(cand[1]))...).Output()
	if err != nil {
		return "", "", fmt.Errorf("apt-cache show %s=%s (%s): %w", a.k.Meta, cand[1], a.k.Suite, err)
	}
	// The candidate's Depends names the kernel package with its version.
	m := regexp.MustCompile(`(?m)^Depends: (linux-image-[0-9][^ ,]*-amd64) \(= ([^)]+)\)`).FindSubmatch(out)
	if m == nil {
		return "", "", fmt.Errorf("%s (%s): no kernel package in its Depends", a.k.Meta, a.k.Suite)
	}
	return string(m[1]), string(m[2]), nil
}

func (a aptState) download(ctx context.Context, pkg, version string) (string, error) {
	dst := filepath.Join(a.dir, "debs")
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "apt-get", a.args("download", pkg+"="+version)...)
	cmd.Dir = dst
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("apt-get download %s=%s: %v: %s", pkg, version, err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(dst, pkg+"_*.deb"))
	for _, d := range debs {
		if strings.Contains(filepath.Base(d), "_"+strings.ReplaceAll(version, ":", "%3a")+"_") {
			return d, nil
		}
	}
	return "", fmt.Errorf("apt-get download %s=%s: no .deb in %s", pkg, version, dst)
}

//go:embed init.sh
var initScript []byte

// bootModules are the modules the initramfs loads to mount the host's files (virtio PCI, 9p,
// overlay), with what they depend on before them.
var bootModules = []string{"virtio_pci", "9pnet_virtio", "9p", "overlay"}

// writeInitrd writes a gzipped newc initramfs: busybox, the init script, and the boot modules
// (in dependency order, listed in /modules).
func writeInitrd(path, modDir string) error {
	deps, err := readModulesDep(filepath.Join(modDir, "modules.dep"))
	if err != nil {
		return err
	}
	var order []string
	seen := map[string]bool{}
	var visit func(string) error
	visit = func(rel string) error {
		if seen[rel] {
			return nil
		}
		seen[rel] = true
		for _, d := range deps[rel] {
			if err := visit(d); err != nil {
				return err
			}
		}
		order = append(order, rel)
		return nil
	}
	byName := map[string]string{}
	for rel := range deps {
		byName[strings.TrimSuffix(filepath.Base(rel), ".ko")] = rel
	}
	for _, m := range bootModules {
		rel, ok := byName[m]
		if !ok {
			continue // built in
		}
		if err := visit(rel); err != nil {
			return err
		}
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	cw := &cpioWriter{w: zw}
	for _, d := range []string{"bin", "dev", "proc", "sys", "mods", "lower", "rw", "newroot"} {
		cw.dir(d)
	}
	bb, err := os.ReadFile(busybox)
	if err != nil {
		return err
	}
	cw.file("bin/busybox", 0o755, bb)
	cw.file("init", 0o755, initScript)
	var list []string
	for _, rel := range order {
		b, err := os.ReadFile(filepath.Join(modDir, rel))
		if err != nil {
			return err
		}
		name := filepath.Base(rel)
		cw.file("mods/"+name, 0o644, b)
		list = append(list, name)
	}
	cw.file("modules", 0o644, []byte(strings.Join(list, "\n")+"\n"))
	cw.trailer()
	if cw.err != nil {
		return cw.err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// readModulesDep maps each module's path to the paths of the modules it needs.
func readModulesDep(path string) (map[string][]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	deps := map[string][]string{}
	for line := range strings.SplitSeq(string(b), "\n") {
		mod, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		deps[mod] = strings.Fields(rest)
	}
	return deps, nil
}

// cpioWriter writes the newc format the kernel unpacks an initramfs from.
type cpioWriter struct {
	w   io.Writer
	ino int
	err error
}

func (c *cpioWriter) entry(name string, mode uint32, data []byte) {
	if c.err != nil {
		return
	}
	c.ino++
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
	var b bytes.Buffer
	b.WriteString(hdr)
	b.WriteString(name)
	b.WriteByte(0)
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
	b.Write(data)
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
	_, c.err = c.w.Write(b.Bytes())
}

func (c *cpioWriter) dir(name string)                         { c.entry(name, 0o040755, nil) }
func (c *cpioWriter) file(name string, perm uint32, b []byte) { c.entry(name, 0o100000|perm, b) }
func (c *cpioWriter) trailer()                                { c.entry("TRAILER!!!", 0, nil) }

// RunOptions tune a boot.
type RunOptions struct {
	CPUs   int           // default 2
	Memory int           // MiB, default 3072
	Limit  time.Duration // the whole boot, default 10 minutes
	// Console receives the guest's console as it comes (nil: discarded); the returned output
	// holds it too.
	Console io.Writer
}

// ExitMarker starts the console line with the script's exit status.
const ExitMarker = "MPTCPGO-VM-EXIT "

// ErrNoExit: the guest stopped (or was stopped at the limit) without reporting an exit status.
var ErrNoExit = errors.New("the guest reported no exit status")

// Run boots img and runs script (a shell script's text) as root in the guest, in / of the
// host's files (writable in memory). It returns the console output and the script's exit
// status.
func Run(ctx context.Context, img *Image, script string, o RunOptions) (output string, status int, err error) {
	if o.CPUs == 0 {
		o.CPUs = 2
	}
	if o.Memory == 0 {
		o.Memory = 3072
	}
	if o.Limit == 0 {
		o.Limit = 10 * time.Minute
	}
	runs := filepath.Join(Cache(), "runs")
	if err := os.MkdirAll(runs, 0o755); err != nil {
		return "", -1, err
	}
	f, err := os.CreateTemp(runs, "run-*.sh")
	if err != nil {
		return "", -1, err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(script); err != nil {
		f.Close()
		return "", -1, err
	}
	f.Close()
	ctx, cancel := context.WithTimeout(ctx, o.Limit)
	defer cancel()
	cmdline := strings.Join([]string{
		"console=ttyS0", "panic=-1", "quiet", "loglevel=4",
		"mptcpgo.modules=" + filepath.Join(img.Modules, "lib", "modules"),
		"mptcpgo.run=" + f.Name(),
	}, " ")
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64",
		"-machine", "q35", "-accel", "tcg,thread=multi", "-cpu", "max",
		"-smp", strconv.Itoa(o.CPUs), "-m", strconv.Itoa(o.Memory),
		"-kernel", img.Vmlinuz, "-initrd", img.Initrd, "-append", cmdline,
		"-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
		"-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot")
	cmd.Stdin = nil
	// qemu dies with the thread that started it (Pdeathsig), which this goroutine keeps until
	// Wait returns: a test binary killed at its timeout leaves no guest running.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return "", -1, fmt.Errorf("start qemu: %w", err)
	}
	var out strings.Builder
	status = -1
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := strings.TrimRight(sc.Text(), "\r")
			out.WriteString(line + "\n")
			if o.Console != nil {
				fmt.Fprintln(o.Console, line)
			}
			if rest, ok := strings.CutPrefix(line, ExitMarker); ok {
				if n, err := strconv.Atoi(strings.TrimSpace(rest)); err == nil {
					status = n
				}
			}
		}
		io.Copy(io.Discard, pr)
	}()
	werr := cmd.Wait()
	pw.Close()
	<-done
	if status < 0 {
		if ctx.Err() != nil {
			return out.String(), -1, fmt.Errorf("%w: stopped after %v", ErrNoExit, o.Limit)
		}
		return out.String(), -1, fmt.Errorf("%w (qemu: %v)", ErrNoExit, werr)
	}
	return out.String(), status, nil
}
