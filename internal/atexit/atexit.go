// Package atexit keeps the clean-up work (temporary files and directories
// to remove) that must be done when the process is stopped by a signal
// before the code that made them can undo them itself: the command runs
// Run and exits.
package atexit

import "sync"

var (
	mu     sync.Mutex
	commit sync.RWMutex // Run waits for commits in progress and stops new ones
	next   int
	funcs  = map[int]func(){}
	once   sync.Once
)

// Handle undoes a Register.
type Handle int

// Register adds f to what Run does. Call Done when the work is committed
// or undone.
func Register(f func()) Handle {
	mu.Lock()
	defer mu.Unlock()
	next++
	funcs[next] = f
	return Handle(next)
}

// Done removes the function of h; it does nothing for a zero Handle.
func (h Handle) Done() {
	mu.Lock()
	defer mu.Unlock()
	delete(funcs, int(h))
}

// Commit runs f (the step that makes a temporary file the output, such as
// a rename, followed by Done) so that Run either runs before f starts or
// after f has finished, never in between. After Run, Commit blocks
// forever: the process is exiting.
func Commit(f func()) {
	commit.RLock()
	defer commit.RUnlock()
	f()
}

// Run runs every registered function once (in no particular order) and
// blocks commits from then on. Later calls do nothing.
func Run() {
	once.Do(func() {
		commit.Lock() // never unlocked: the process exits after Run
		mu.Lock()
		defer mu.Unlock()
		for _, f := range funcs {
			f()
		}
		funcs = map[int]func(){}
	})
}
