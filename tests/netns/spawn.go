package netns

import (
	"os/exec"
	"runtime"
	"sync"
)

// The kernel sends a child its PR_SET_PDEATHSIG signal when the thread that forked it ends,
// not the process. Go ends a thread whenever a goroutine exits locked to it (this package's
// namespace pins, the emulator's real-time threads), and cmd.Start forks from whatever thread
// its goroutine happens to run on: a daemon started there would be killed in the middle of an
// unrelated test ("signal: killed"). So every command with a death signal starts on one
// thread that stays locked, and so alive, for as long as the test binary runs.
var spawner struct {
	once sync.Once
	reqs chan spawnReq
}

type spawnReq struct {
	cmd *exec.Cmd
	err chan error
}

// Start starts cmd from the spawner thread; use it (or Namespace.StartCmd, Output, Run) for
// every command whose SysProcAttr sets Pdeathsig.
func Start(cmd *exec.Cmd) error {
	spawner.once.Do(func() {
		spawner.reqs = make(chan spawnReq)
		go func() {
			runtime.LockOSThread() // never unlocked: the goroutine never ends
			for r := range spawner.reqs {
				r.err <- r.cmd.Start()
			}
		}()
	})
	errc := make(chan error, 1)
	spawner.reqs <- spawnReq{cmd, errc}
	return <-errc
}
