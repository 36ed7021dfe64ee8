package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// userHZ is the unit of /proc/<pid>/stat's CPU times: USER_HZ, which Linux
// fixes at 100 for user space on x86 and arm64 whatever the kernel's HZ.
// A reading's 10 ms is 1 to 2% of the 0.5 to 1.3 s a proxy uses in a
// 10,000-request run.
const userHZ = 100

// cpuTime is the user and system CPU time the processes have used, all their
// threads counted (utime and stime of /proc/<pid>/stat).
func cpuTime(pids []int) (time.Duration, error) {
	ticks, err := sumProc(pids, "stat", parseStatTicks)
	return time.Duration(ticks) * time.Second / userHZ, err
}

// rssKiB is the processes' resident memory, VmRSS of /proc/<pid>/status.
func rssKiB(pids []int) (int64, error) {
	return sumProc(pids, "status", parseVmRSS)
}

// sumProc adds up what parse reads in /proc/<pid>/file over pids.
func sumProc(pids []int, file string, parse func([]byte) (int64, error)) (int64, error) {
	var sum int64
	for _, pid := range pids {
		path := fmt.Sprintf("/proc/%d/%s", pid, file)
		b, err := os.ReadFile(path)
		if err != nil {
			return 0, fmt.Errorf("reading a proxy's %s: %w", file, err)
		}
		n, err := parse(b)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", path, err)
		}
		sum += n
	}
	return sum, nil
}

// parseStatTicks returns utime+stime from a /proc/<pid>/stat line. The
// command name, in parentheses, may hold spaces; the fields after it start
// at field 3 (state), so utime and stime, fields 14 and 15, are its 11th
// and 12th.
func parseStatTicks(stat []byte) (int64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("no ')' in %q", stat)
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("%d fields after the command name, want at least 13", len(f))
	}
	var sum int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, err
		}
		sum += n
	}
	return sum, nil
}

func parseVmRSS(status []byte) (int64, error) {
	for line := range strings.SplitSeq(string(status), "\n") {
		v, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
	}
	return 0, fmt.Errorf("no VmRSS line")
}

// rssSampler reads the processes' RSS every rssEvery while a run lasts, so
// that the last reading is taken under load rather than after it.
type rssSampler struct {
	quit chan struct{}
	wg   sync.WaitGroup
	last int64
	err  error
}

const rssEvery = 200 * time.Millisecond

func startRSSSampler(pids []int) *rssSampler {
	s := &rssSampler{quit: make(chan struct{})}
	if len(pids) == 0 {
		return s
	}
	s.wg.Go(func() {
		t := time.NewTicker(rssEvery)
		defer t.Stop()
		for {
			select {
			case <-s.quit:
				return
			case <-t.C:
				if s.last, s.err = rssKiB(pids); s.err != nil {
					return
				}
			}
		}
	})
	return s
}

// stop ends the sampling and returns the last reading.
func (s *rssSampler) stop() (int64, error) {
	close(s.quit)
	s.wg.Wait()
	return s.last, s.err
}
